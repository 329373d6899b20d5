#!/bin/bash
# cvtrain spot watch: on a spot interruption notice (instance metadata
# spot/instance-action, about two minutes ahead), send SIGTERM to every Batch job
# container on this instance, once each, so cvtrain writes a checkpoint and exits 75
# (which the job definition retries) instead of losing the epoch in progress.
# Runs on the host (a systemd unit from infra/cvtrain.yaml's launch template): the
# containers themselves cannot reach the metadata service (hop limit 1).
# Settings (for tests): SPOT_WATCH_IMDS, SPOT_WATCH_DOCKER, SPOT_WATCH_INTERVAL seconds.
set -u
imds=${SPOT_WATCH_IMDS:-http://169.254.169.254}
docker=${SPOT_WATCH_DOCKER:-docker}
interval=${SPOT_WATCH_INTERVAL:-5}
signalled=" "
while true; do
    token=$(curl -sf -m 2 -X PUT "$imds/latest/api/token" \
        -H "X-aws-ec2-metadata-token-ttl-seconds: 300") || token=""
    if [ -n "$token" ] && curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" \
        "$imds/latest/meta-data/spot/instance-action" >/dev/null; then
        for id in $("$docker" ps -q --filter label=com.amazonaws.ecs.task-arn); do
            case "$signalled" in *" $id "*) continue ;; esac
            echo "cvtrain-spot-watch: interruption notice: SIGTERM to container $id"
            "$docker" kill --signal TERM "$id" && signalled="$signalled$id "
        done
    fi
    sleep "$interval"
done
