"""Put this folder on PYTHONPATH and ``import tensorflow`` fails as if it were not installed
(a machine with JAX and no TensorFlow: tests/test_backends.py, benchmarks/gpu/jobs.sh)."""

import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
