# Sourced by the GPU scripts beside it, from the repository root:
#   . benchmarks/gpu/setup.sh
# Keras on JAX (the GPU machine has no TensorFlow), unbuffered output, $OUT created
# (default /tmp/out), $py the Python to run (PYTHON, else python3), and the wheels carried in
# .whl/ (benchmarks/gpu/fetch_wheels.sh) installed into a folder of their own, $site, which
# PYTHONPATH puts before the repository. Without .whl/ (a SMOKE=1 run on a machine that has
# the packages) only the repository is put on PYTHONPATH.
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax OUT="${OUT:-/tmp/out}"
py="${PYTHON:-python3}"
mkdir -p "$OUT"
# The wheels are for Python 3.12 (the GPU machine's); another Python (a SMOKE=1 run here)
# takes its own packages.
if compgen -G ".whl/*.whl" >/dev/null && ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  echo "not installing .whl/ (wheels for Python 3.12; $py is $("$py" -V 2>&1))"
  export PYTHONPATH="$PWD"
elif compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH="$site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
