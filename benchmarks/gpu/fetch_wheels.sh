#!/usr/bin/env bash
# Run here (with internet to PyPI) before a GPU session: downloads the wheels the GPU
# machine lacks into .whl/ (ignored by git, carried with the device tool's `carry`).
# That machine has Python 3.12, JAX with CUDA, numpy, typer, rich, pyyaml, tensorboard,
# protobuf, h5py, ml-dtypes; it has no TensorFlow, Keras or pydantic, and no internet.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    "keras==$(python3 -c 'import keras; print(keras.__version__)')" namex optree \
    pydantic pydantic-core annotated-types typing-inspection filelock
du -sh .whl
