#!/usr/bin/env bash
# Build a minimal Debian base image locally with debootstrap and `docker import` it, for
# machines that cannot pull from Docker Hub (CI here). It has what docker/Dockerfile needs
# from a CPU base: python3 (3.11 on bookworm), python3-venv and ca-certificates.
#
#   docker/build-base.sh [TAG]        default TAG: cvtrain-base:bookworm
#
# Env: SUITE (bookworm), MIRROR (http://deb.debian.org/debian), CVTRAIN_BASE_CACHE (folder
# for the root-filesystem tarball, default .cache/docker; reused when present, so the
# debootstrap runs once per machine), FORCE=1 to rebuild. Needs root and debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-cvtrain-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
CACHE=${CVTRAIN_BASE_CACHE:-.cache/docker}
TARBALL="$CACHE/base-$SUITE.tar"

if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists (FORCE=1 to rebuild)"
    exit 0
fi

if [[ -n "${FORCE:-}" || ! -s "$TARBALL" ]]; then
    mkdir -p "$CACHE"
    rootfs=$(mktemp -d /tmp/cvtrain-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap $SUITE from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || {
        tail -n 20 "$CACHE/debootstrap.log" >&2
        exit 1
    }
    # slim it: apt lists, caches, docs and man pages are not needed in an image
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    tar -C "$rootfs" --numeric-owner -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
fi

docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE + python3 python3-venv ca-certificates" \
    "$TARBALL" "$TAG"
echo "built $TAG"
