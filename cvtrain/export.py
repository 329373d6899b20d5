"""``cvtrain export``: a run's raw-image model in a format for serving, checked to predict
as the Keras model does.

Keras writes each format (``model.export``): a TensorFlow SavedModel (needs TensorFlow;
on JAX through jax2tf), ONNX (on TensorFlow through tf2onnx and onnx, on JAX through
jax2onnx) and LiteRT/TensorFlow Lite (TensorFlow's converter; the TensorFlow backend).
A package that is missing is named in one line with what to install. The export takes
what ``classifier.keras`` takes, uint8 RGB images (batch, height, width, 3), and returns
its class probabilities; the class names go beside it (``classes.json`` in a SavedModel
folder, ``<file>.classes.json`` beside a file, and in an ONNX file's metadata too).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain.errors import CvtrainError, UsageError

SUFFIX = {"savedmodel": "-savedmodel", "onnx": ".onnx", "tflite": ".tflite"}
NAMES = {"savedmodel": "TensorFlow SavedModel", "onnx": "ONNX model",
         "tflite": "LiteRT (TensorFlow Lite) model"}
#: the largest difference of a probability allowed between the export and Keras
TOLERANCE = 1e-4


class ExportError(CvtrainError):
    """An export that cannot be made here (a package missing) or does not predict as the
    Keras model does."""

    exit_code = 2


@dataclass
class Written:
    path: Path
    format: str
    classes_file: Path
    checked: int = 0
    difference: float | None = None
    note: str = ""

    def describe(self) -> str:
        text = f"{NAMES[self.format]}, class names in {self.classes_file}"
        if self.checked:
            text += (f"; same predictions as classifier.keras on {self.checked} random images "
                     f"(largest probability difference {self.difference:.1e})")
        return text + (f"; {self.note}" if self.note else "")


def _need(module: str, what: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ExportError(f"--format {what}: needs the {module} package, which is not "
                          f"installed; pip install {install}")


def requirements(fmt: str, backend: str) -> None:
    """One line naming the package (or backend) a format needs here, when it is missing."""
    if fmt in ("savedmodel", "tflite"):
        _need("tensorflow", fmt, "'cvtrain[cpu]' (or 'cvtrain[tf-gpu]')")
    if fmt == "tflite" and backend != "tensorflow":
        raise ExportError("--format tflite: Keras converts to LiteRT on the TensorFlow backend "
                          "only; add --backend tensorflow")
    if fmt == "onnx":
        if backend == "tensorflow":
            _need("tf2onnx", fmt, "'cvtrain[onnx]' (tf2onnx and onnx)")
            _need("onnx", fmt, "'cvtrain[onnx]' (tf2onnx and onnx)")
        else:
            _need("jax2onnx", fmt, "jax2onnx (or export on TensorFlow: --backend tensorflow, "
                  "with 'cvtrain[onnx]')")


def default_path(label: str, fmt: str) -> Path:
    return Path(label.replace("/", "-") + "-classifier" + SUFFIX[fmt])


def _sample(loaded, count: int) -> np.ndarray:
    """``count`` random uint8 images of the size the model takes (of its resize size
    when it takes any)."""
    size = loaded.size or tuple(loaded.info.get("input", {}).get("resize") or (64, 64))
    return np.random.default_rng(0).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def export_classifier(loaded, fmt: str, out: Path | None, check: int = 8) -> Written:
    """Write ``loaded``'s classifier as ``fmt`` at ``out``; compare predictions on
    ``check`` random images with the Keras model's."""
    import keras

    backend = keras.backend.backend()
    requirements(fmt, backend)
    _quiet_tensorflow(fmt, backend)
    path = Path(out) if out is not None else default_path(loaded.label, fmt)
    if fmt != "savedmodel" and path.suffix != SUFFIX[fmt] and not path.is_dir():
        path = path.with_name(path.name + SUFFIX[fmt])  # a file of this format says so
    if fmt == "savedmodel" and path.is_dir() and any(path.iterdir()) \
            and not (path / "saved_model.pb").is_file():
        raise UsageError(f"--out {path}: a folder that is not a SavedModel; give a new path")
    if fmt != "savedmodel" and path.is_dir():
        raise UsageError(f"--out {path}: a folder; give a file path ({SUFFIX[fmt]})")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    images = _sample(loaded, max(check, 1))
    expected = np.asarray(model.predict_on_batch(images), np.float64)  # the model is called
    keras_format = {"savedmodel": "tf_saved_model", "onnx": "onnx", "tflite": "litert"}[fmt]
    if fmt == "savedmodel" and path.is_dir():
        shutil.rmtree(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # converters' deprecation notices are not the user's
        model.export(str(path), format=keras_format, verbose=False)
    classes_file = path / "classes.json" if fmt == "savedmodel" else Path(f"{path}.classes.json")
    classes_file.write_text(json.dumps(loaded.classes, indent=2) + "\n", encoding="utf-8")
    if fmt == "onnx":
        _onnx_metadata(path, loaded)
    written = Written(path, fmt, classes_file)
    if check:
        got = run_export(path, fmt, images)
        if got is None:
            written.note = f"not checked: {_runtime(fmt)} is not installed"
            return written
        difference = float(np.abs(got - expected).max())
        if got.shape != expected.shape or difference > TOLERANCE:
            raise ExportError(f"{path}: the {NAMES[fmt]} does not predict as classifier.keras "
                              f"does (largest probability difference {difference:.2e} on "
                              f"{check} random images; allowed {TOLERANCE:.0e})")
        written.checked, written.difference = check, difference
    return written


def _quiet_tensorflow(fmt: str, backend: str) -> None:
    """TensorFlow, when this export uses it beside another backend, imported without its
    C++ start-up notices; its Python loggers' warnings about what it loads kept down."""
    import logging

    if backend != "tensorflow" and fmt != "onnx":
        from cvtrain.training.backend import quiet_stderr

        with quiet_stderr():
            import tensorflow  # noqa: F401
    for name in ("absl", "tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _onnx_metadata(path: Path, loaded) -> None:
    """The class names and the input's description in the ONNX file's metadata."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in (("classes", json.dumps(loaded.classes)),
                       ("input", json.dumps(loaded.info.get("input", {}))),
                       ("run", loaded.label)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _runtime(fmt: str) -> str:
    return {"savedmodel": "tensorflow", "onnx": "onnxruntime",
            "tflite": "ai-edge-litert or tensorflow"}[fmt]


def run_export(path: Path, fmt: str, images: np.ndarray) -> np.ndarray | None:
    """The probabilities an export gives for ``images``, by its own runtime; None when
    that runtime is not installed."""
    if fmt == "savedmodel":
        import tensorflow as tf

        saved = tf.saved_model.load(str(path))  # kept: its functions use its variables
        return np.asarray(saved.serve(images), np.float64)
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return np.asarray(session.run(None, {name: images})[0], np.float64)
    from cvtrain.training.backend import quiet_stderr

    with quiet_stderr():  # the interpreter's C++ notices (its CPU delegate)
        interpreter = _tflite_interpreter(path)
        if interpreter is None:
            return None
        entry = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(entry["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(entry["index"], images)
        interpreter.invoke()
        output = interpreter.get_output_details()[0]["index"]
        return np.asarray(interpreter.get_tensor(output), np.float64)


def _tflite_interpreter(path: Path):
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(path))
    if importlib.util.find_spec("tensorflow") is None:
        return None
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return tf.lite.Interpreter(model_path=str(path))
