#!/usr/bin/env bash
# A throwaway Docker engine for CI (and for trying the docker backend on a bare machine).
#
#   docker/ci-engine.sh install      apt-get install docker.io debootstrap (Debian/Ubuntu, root)
#   docker/ci-engine.sh start        start dockerd in the background unless an engine already
#                                    answers; prints the pid it started (nothing otherwise)
#   docker/ci-engine.sh stop PID     stop that dockerd (SIGTERM, then wait); no PID: no-op
#
# dockerd runs with --bridge=none --iptables=false: containers get --network host or
# --network none only. Storage: overlay2 when the kernel allows it, else vfs (slow, but
# works everywhere). State lives in $CVTRAIN_DOCKER_ROOT (default /var/lib/docker), so a
# second CI run on the same machine reuses the base image and the pip layer.
set -euo pipefail

ROOT=${CVTRAIN_DOCKER_ROOT:-/var/lib/docker}
LOG=${CVTRAIN_DOCKER_LOG:-/tmp/cvtrain-dockerd.log}
SOCK=${CVTRAIN_DOCKER_SOCK:-/var/run/docker.sock}

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

case "${1:-}" in
install)
    missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    ;;
start)
    if engine_up; then
        echo "docker engine already running; using it" >&2
        exit 0
    fi
    for driver in ${CVTRAIN_DOCKER_STORAGE:-overlay2 vfs}; do
        setsid dockerd --bridge=none --iptables=false --ip-masq=false \
            --storage-driver="$driver" --data-root="$ROOT" \
            --host="unix://$SOCK" >"$LOG" 2>&1 </dev/null &
        pid=$!
        for _ in $(seq 60); do
            if engine_up; then
                echo "dockerd $pid up (storage $driver, log $LOG)" >&2
                echo "$pid"
                exit 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "dockerd with storage $driver did not come up; last log lines:" >&2
        tail -n 5 "$LOG" >&2 || true
    done
    exit 1
    ;;
stop)
    pid=${2:-}
    [[ -n "$pid" ]] || exit 0
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || exit 0
        sleep 0.5
    done
    echo "dockerd $pid did not stop in 30 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
    ;;
*)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
