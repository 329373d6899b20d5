"""Shared fixtures. TensorFlow is quietened before any test imports it."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX's compiled programs: shared by this session's runs (as a user's runs share theirs),
# never in the user's own cache
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="cvtrain-jax-"))

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"


def job_using(section: str, name: str):
    """A spec of the jobs folder whose dataset (``data``) or model (``model``) is ``name``."""
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import job_files

    for path in job_files(JOBS):
        spec = load_spec(path)
        if (spec.data.dataset if section == "data" else spec.model.name) == name:
            return spec
    pytest.skip(f"no job in {JOBS} uses {section} {name}")


def model_options(name: str, **kw):
    """A registered model's options with ``kw``; no weights downloaded."""
    from cvtrain.models import model_option_classes

    cls = model_option_classes()[name]
    if "weights" in cls.model_fields:
        kw.setdefault("weights", "none")  # no downloads in tests
    return cls(name=name, **kw)


def _path_keys() -> list[tuple[str, str, str]]:
    from cvtrain.data.registry import list_datasets
    from cvtrain.models import list_models

    return sorted(
        {(f"data.{f}", "data", n) for n, d in list_datasets().items()
         for f in d.options.path_fields}
        | {(f"model.{f}", "model", n) for n, m in list_models().items()
           for f in m.options.path_fields})


#: (key, section, member) for every spec key that may hold a local path, from the registries
PATH_KEYS = _path_keys()


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m cvtrain ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cvtrain", *map(str, args)], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def kill_at(point, signame, args, env=None):
    """``cvtrain ARGS`` in a subprocess, sent ``signame`` right after ``point`` returns
    (``module:function[@N]``, see tests/kill_at.py)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, str(Path(__file__).with_name("kill_at.py")), point,
                           signame, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=full_env)


@pytest.fixture
def write_job(tmp_path):
    """Write a YAML job file into tmp_path and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write


@pytest.fixture
def keras_globals():
    """Restore what an in-process run changes for the whole process: Keras's global dtype
    policy (mixed precision), TensorFlow op determinism (on for seeded runs) and the SIGTERM
    handler. Teardown runs even when the test fails, so nothing leaks into later tests.
    TensorFlow is only imported if the test imported it."""
    import signal

    def state():
        if "keras" not in sys.modules:
            return "float32", False  # the defaults: nothing has changed them yet
        import keras
        from tensorflow.python.framework import config as tf_config

        return keras.mixed_precision.global_policy().name, tf_config.is_op_determinism_enabled()

    policy, deterministic = state()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:  # pytest runs this after a failed test as well
        if handler is not None:  # None: not set from Python, nothing of ours to put back
            signal.signal(signal.SIGTERM, handler)
        if "keras" in sys.modules:
            import keras
            from tensorflow.python.framework import config as tf_config

            keras.mixed_precision.set_global_policy(policy)
            if deterministic:
                tf_config.enable_op_determinism()
            else:
                tf_config.disable_op_determinism()


#: history.csv of a one-epoch run
HISTORY = ("epoch,loss,accuracy,val_loss,val_accuracy,seconds,learning_rate\n"
           "1,2.0,0.3,2.1,0.25,1.0,0.01\n")


def fake_run(root, job: str = "basenet", run_id: str = "r1", *, spec=None,
             metrics: dict | None = None, history: str | None = HISTORY,
             files: dict | None = None, complete: bool = True):
    """A run folder as `cvtrain run` leaves it, without training: ``spec.yaml`` (``spec``:
    its text or a JobSpec; default ``name: <job>``), ``metrics.json`` when ``metrics`` are
    given, ``history.csv``, any other ``files`` (relative path: text or bytes), then the
    manifest when ``complete``. Returns its :class:`~cvtrain.runs.RunFolder`."""
    from cvtrain import manifest, runs

    run = runs.RunFolder(root, job, run_id).prepare()
    text = f"name: {job}\n" if spec is None else spec if isinstance(spec, str) else spec.to_yaml()
    run.file(runs.SPEC).write_text(text)
    if metrics is not None:
        manifest.write_json(run.file(runs.METRICS), metrics)
    if history is not None:
        run.file(runs.HISTORY).write_text(history)
    for rel, content in (files or {}).items():
        file = run.path / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            file.write_bytes(content)
        else:
            file.write_text(content)
    if complete:
        run.finalize()
    return run


def load_template(path: Path) -> dict:
    """A CloudFormation YAML template as data, its short tags (``!Sub``, ``!Ref``, ...)
    read as the plain value they tag."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def any_node(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", any_node)
    return yaml.load(path.read_text(), Loader=Loader)
