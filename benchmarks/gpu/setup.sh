# Sourced by the GPU scripts beside it, from the repository root:
#   . benchmarks/gpu/setup.sh
# Keras on JAX (the GPU machine has no TensorFlow), unbuffered output, $OUT created
# (default /tmp/out), $py the Python to run (PYTHON, else python3), and the wheels carried in
# .whl/ (benchmarks/gpu/fetch_wheels.sh) installed into a folder of their own, which
# PYTHONPATH puts before the repository. Without .whl/ (a SMOKE=1 run on a machine that has
# the packages) only the repository is put on PYTHONPATH.
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax OUT="${OUT:-/tmp/out}"
py="${PYTHON:-python3}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="$site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
