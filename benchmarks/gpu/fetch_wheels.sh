#!/usr/bin/env bash
# Run here (with PyPI) before a GPU session: downloads into .whl/ (ignored by git, carried
# with the device tool's `carry`) the image's own pinned versions -- the `==` lines of
# docker/requirements.txt, the image's uv lock -- of Keras and cvtrain's dependencies, as
# wheels for Python 3.12 on manylinux x86_64 (the GPU machine's Python). That machine has
# Python 3.12, JAX with CUDA, numpy, typer, rich, pyyaml, tensorboard, protobuf, h5py,
# ml-dtypes; no TensorFlow, Keras or pydantic, and no internet. The carried wheels go in
# front of its own packages (benchmarks/gpu/setup.sh), so the lock's version wins wherever
# one is carried.
#
# Not carried (the device tool carries 64 MiB in all, working tree included; every lock
# pin together is about 76 MiB):
# - JAX's stack: jax, jaxlib, jax-cuda12-*, nvidia-*, numpy, scipy, ml-dtypes, opt-einsum.
#   The machine's JAX is built for its CUDA and is kept with the versions it was built
#   against; benchmarks/gpu/jobs.sh prints lock against installed for these.
# - tensorboard's server stack, already on the machine: tensorboard,
#   tensorboard-data-server, grpcio, protobuf, werkzeug, markdown, markupsafe, setuptools.
# - S3 only (a run with a local --out never imports them): boto3, botocore (17 MiB alone),
#   s3transfer, jmespath, urllib3, obstore.
# Everything else is carried at the lock's version: keras, h5py, pillow, matplotlib,
# pydantic, typer, rich, pyyaml, filelock and their needs (about 40 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
lock=docker/requirements.txt
[ -f "$lock" ] || { echo "no $lock (the image's lock)"; exit 1; }
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
skip='jax|jaxlib|jax-cuda12-.*|nvidia-.*|numpy|scipy|ml-dtypes|opt-einsum'
skip+='|tensorboard|tensorboard-data-server|grpcio|protobuf|werkzeug|markdown|markupsafe|setuptools'
skip+='|boto3|botocore|s3transfer|jmespath|urllib3|obstore'
pins=$(grep -oE '^[A-Za-z0-9._-]+==[^ ;#]+' "$lock" | grep -viE "^($skip)==" || true)
grep -q '^keras==' <<<"$pins" || { echo "no keras== pin in $lock"; exit 1; }
# a stale wheel of another version would be installed beside the pinned one
rm -f .whl/*.whl
# shellcheck disable=SC2086  # one argument a pin
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
echo "carried, from $lock: $(wc -l <<<"$pins") pins; $(find .whl -name "*.whl" | wc -l) wheels"
du -sh .whl
size=$(du -sm .whl | cut -f1)
[ "$size" -le 48 ] || { echo ".whl is $size MiB: over 48 MiB, too near the 64 MiB carry limit"; exit 1; }
