"""One training run, top to bottom: data -> model -> compile -> fit -> evaluate -> save.

``run_job`` is what ``cvtrain run`` calls in every backend; it knows nothing of where it
runs. It writes the run folder described in :mod:`cvtrain.runs`, ``manifest.json`` last.
"""

from __future__ import annotations

import csv
import os
import platform
import secrets
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cvtrain import __version__, runs
from cvtrain.report import RunLog, plot_curves, summary_table
from cvtrain.spec import JobSpec

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                   "learning_rate"]


@dataclass
class RunResult:
    run: runs.RunDir
    metrics: dict


def git_revision() -> str | None:
    """cvtrain's git revision: $CVTRAIN_GIT_REVISION (set in images), else the checkout's."""
    if rev := os.environ.get("CVTRAIN_GIT_REVISION"):
        return rev
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def configure_device(spec: JobSpec, seed: int) -> dict:
    """Seeds, determinism, GPU memory growth, mixed precision; returns the device record."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    keras.utils.set_random_seed(seed)
    if spec.seed is not None:
        # repeatable to the bit on CPU; on GPU at some speed cost, which the user asked for
        tf.config.experimental.enable_op_determinism()
    mode = spec.training.mixed_precision
    mixed = mode == "on" or (mode == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        names.append(details.get("device_name", gpu.name))
    return {"type": "gpu" if gpus else "cpu", "gpus": names, "cpu": cpu,
            "cpu_count": os.cpu_count(), "mixed_precision": mixed,
            "jit_compile": spec.training.jit_compile, "deterministic": spec.seed is not None}


def load_dataset(spec: JobSpec, log: RunLog):
    from cvtrain.data.cifar import load_cifar100

    return load_cifar100(spec.data.path, num_classes=spec.data.num_classes,
                         edition=spec.data.edition, progress=log.interactive)


def build_optimizer(spec: JobSpec):
    import keras

    opt = spec.training.optimizer
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.learning_rate)
    return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)


def make_callbacks(spec: JobSpec, run: runs.RunDir, log: RunLog, splits, epochs: int):
    """Keras callbacks: epoch timing and history.csv, progress, early stopping, TensorBoard."""
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Times the training part of each epoch (validation excluded), appends history.csv
        as each epoch ends and prints one line per epoch."""

        def __init__(self):
            super().__init__()
            self.rows: list[dict] = []
            with open(run.file(runs.HISTORY), "w", newline="") as fh:
                csv.writer(fh).writerow(HISTORY_COLUMNS)

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()
            self._train_s = None

        def on_test_begin(self, logs=None):
            if self._train_s is None:
                self._train_s = time.perf_counter() - self._t0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self._t0
            lr = self.model.optimizer.learning_rate
            row = {"epoch": epoch + 1, "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
                   "val_loss": logs.get("val_loss"), "val_accuracy": logs.get("val_accuracy"),
                   "seconds": round(seconds, 3),
                   "learning_rate": float(keras.ops.convert_to_numpy(lr))}
            row["train_seconds"] = self._train_s if self._train_s is not None else seconds
            self.rows.append(row)
            with open(run.file(runs.HISTORY), "a", newline="") as fh:
                csv.writer(fh).writerow([row[c] for c in HISTORY_COLUMNS])
            log.epoch_line(row, epochs)

    recorder = EpochRecorder()
    callbacks = [recorder]
    if log.interactive:
        callbacks.insert(0, log.progress_callback(splits.steps_per_epoch, epochs))
    es = spec.training.early_stopping
    if es is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience,
            restore_best_weights=es.restore_best_weights, verbose=0))
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=str(run.file(runs.TENSORBOARD)), write_graph=False, update_freq="epoch"))
    return recorder, callbacks


def best_epoch(rows: list[dict], monitor: str) -> int:
    values = [(r[monitor], r["epoch"]) for r in rows if r.get(monitor) is not None]
    if not values:
        return rows[-1]["epoch"] if rows else 0
    pick = max if monitor.endswith("accuracy") else min
    return pick(values, key=lambda v: v[0])[1]


def package_versions() -> dict:
    import keras
    import numpy
    import tensorflow as tf

    return {"cvtrain": __version__, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": numpy.__version__}


def run_job(spec: JobSpec, out: Path | None = None, run_id: str | None = None,
            log: RunLog | None = None) -> RunResult:
    """Train and evaluate ``spec``; leave a complete run folder; return its metrics.

    The dataset is loaded before the run folder is made, so a missing or corrupt dataset
    leaves nothing behind.
    """
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    log = log or RunLog()
    run = runs.RunDir.claim(out or runs.default_out_dir(), spec.name, run_id)
    data = load_dataset(spec, log)
    run.prepare()
    log.attach_file(run.file(runs.LOG))
    try:
        return _run(spec, data, run, log, started, t_start)
    finally:
        log.detach_file()


def _run(spec: JobSpec, data, run: runs.RunDir, log: RunLog, started, t_start) -> RunResult:
    run.file(runs.SPEC).write_text(spec.to_yaml(), encoding="utf-8")
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    log.print(f"[bold]run[/] {spec.name} / {run.run_id} -> {run.path}")
    log.print(f"[bold]data[/]: {spec.data.dataset} from {data.source} (sha256 {data.sha256[:12]})")

    import keras

    from cvtrain.data.pipeline import build_splits
    from cvtrain.models import build_model

    device = configure_device(spec, seed)
    t = spec.training
    epochs = t.epochs
    splits = build_splits(data, spec.data.num_classes, spec.data.validation_split,
                          spec.data.normalize, spec.data.augment, t.batch_size, epochs, seed)
    log.print(f"[bold]split[/]: {splits.train_size} train, {splits.validation_size} validation, "
              f"{splits.test_size} test images; {spec.data.num_classes} classes; "
              f"device {device['type']}{' (mixed precision)' if device['mixed_precision'] else ''}")

    model = build_model(spec.model, splits.input_shape, spec.data.num_classes)
    jit = {"auto": "auto", "on": True, "off": False}[t.jit_compile]
    model.compile(optimizer=build_optimizer(spec), loss="categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit,
                  steps_per_execution=t.steps_per_execution)
    log.print(f"[bold]model[/]: {spec.model.name}, {model.count_params():,} parameters")

    recorder, callbacks = make_callbacks(spec, run, log, splits, epochs)
    t_fit = time.perf_counter()
    model.fit(splits.train, validation_data=splits.validation, epochs=epochs,
              steps_per_epoch=splits.steps_per_epoch, callbacks=callbacks, verbose=0,
              shuffle=False)  # the stream shuffles itself
    fit_seconds = time.perf_counter() - t_fit
    rows = recorder.rows

    test = model.evaluate(splits.test, verbose=0, return_dict=True)
    model.save(run.file(runs.MODEL))
    plot_curves(rows, run.file(runs.CURVES), title=f"{spec.name} ({run.run_id})")

    es = spec.training.early_stopping
    monitor = es.monitor if es else "val_loss"
    timed = rows[1:] if len(rows) > 1 else rows
    train_images = splits.train_size * len(timed)
    train_seconds = sum(r["train_seconds"] for r in timed)
    metrics = {
        "job": spec.name,
        "run_id": run.run_id,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "best_epoch": best_epoch(rows, monitor),
        "best_epoch_monitor": monitor,
        "weights_restored": bool(es and es.restore_best_weights),
        "epochs_run": len(rows),
        "epochs_max": epochs,
        "wall_seconds": round(time.perf_counter() - t_start, 3),
        "fit_seconds": round(fit_seconds, 3),
        # over all epochs but the first (graph tracing and warm-up), validation excluded
        "train_images_per_second": (round(train_images / train_seconds, 1)
                                    if train_seconds else None),
        "seed": seed,
        "report": {"test_accuracy": spec.report.test_accuracy, "test_loss": spec.report.test_loss},
        "dataset": {"name": spec.data.dataset, "source": str(data.source), "sha256": data.sha256,
                    "train": splits.train_size, "validation": splits.validation_size,
                    "test": splits.test_size, "classes": spec.data.num_classes,
                    "normalization": {"mean": splits.mean, "std": splits.std}},
        "parameters": int(model.count_params()),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "device": device,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    runs.write_json(run.file(runs.METRICS), metrics)
    log.print(summary_table(metrics, run.path))
    keras.backend.clear_session()
    log.detach_file()  # log.txt is complete before the manifest lists it
    run.finalize()
    return RunResult(run, metrics)
