"""One training run, top to bottom: data -> model -> compile -> fit -> evaluate -> save.

``run_job`` is what ``cvtrain run`` calls in every backend; it knows nothing of where it
runs. It writes the run folder described in :mod:`cvtrain.runs`, ``manifest.json`` last.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cvtrain import __version__, runs
from cvtrain.errors import CvtrainError, UsageError
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


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (oneDNN, CPU features) kept off the
    terminal: TensorFlow 2.21 prints them before any log-level setting applies. Whatever
    it printed is shown after all if the import fails."""
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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
        # repeatable to the bit on CPU; on GPU at some speed cost, which the user asked for.
        # (Keras turns XLA off under op determinism.)
        tf.config.experimental.enable_op_determinism()
    else:
        # process-wide state: undo an earlier seeded run in this process (no public API)
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()
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


def local_data_path(path: str | None, log: RunLog) -> str | Path | None:
    """A job's ``data.path``; a URI (``s3://...``) is pulled into the cache once."""
    if path is None or "://" not in path:
        return path
    from cvtrain.storage import localize

    return localize(path, progress=log.interactive)


def load_dataset(spec: JobSpec, log: RunLog):
    """The dataset the spec names: in-memory arrays (CIFAR) or file lists (birds)."""
    path = local_data_path(spec.data.path, log)
    if spec.data.dataset == "cub200":
        from cvtrain.data.birds import load_cub200

        return load_cub200(path, layout=spec.data.layout)
    from cvtrain.data.cifar import load_cifar100

    return load_cifar100(path, num_classes=spec.data.num_classes, edition=spec.data.edition,
                         progress=log.interactive)


def prepare_inputs(spec: JobSpec, data, seed: int, log: RunLog, initial_epoch: int = 0):
    """The train/validation/test streams for this spec's dataset and kind of model."""
    from cvtrain.models.resnet import FeatureHeadOptions

    t, d = spec.training, spec.data
    head = isinstance(spec.model, FeatureHeadOptions)
    if d.dataset == "cifar100":
        if head:
            raise UsageError(f"model.name: {spec.model.name} trains on ResNet50 features of the "
                             "birds; expected data.dataset: cub200")
        from cvtrain.data.pipeline import build_splits

        return build_splits(data, d.num_classes, d.validation_split, d.normalize, d.augment,
                            t.batch_size, t.epochs, seed, initial_epoch)
    if head:
        return feature_inputs(spec, data, seed, log, initial_epoch)
    return birds_image_inputs(spec, data, seed, initial_epoch)


def feature_inputs(spec: JobSpec, birds, seed: int, log: RunLog, initial_epoch: int):
    """Cached backbone features (pooled vectors or maps) as in-memory streams."""
    import tensorflow as tf

    from cvtrain.data.birds import split_indices
    from cvtrain.data.pipeline import Splits, array_eval_stream, array_train_stream
    from cvtrain.features import load_or_extract

    t, d = spec.training, spec.data
    fs = load_or_extract(birds, spec.model, d.image_size, d.layout, seed, log)
    train, test = fs.train, fs.test
    tr, val = split_indices(len(train), d.validation_split)
    classes = birds.num_classes
    stream = array_train_stream(tf.constant(train[tr]),
                                tf.one_hot(tf.constant(birds.train_labels[tr]), classes),
                                t.batch_size, t.epochs, seed, initial_epoch)
    return Splits(
        train=stream,
        validation=array_eval_stream(train[val], birds.train_labels[val], classes, t.batch_size),
        test=array_eval_stream(test, birds.test_labels, classes, t.batch_size),
        steps_per_epoch=math.ceil(len(tr) / t.batch_size), train_size=len(tr),
        validation_size=len(val), test_size=len(test), input_shape=tuple(train.shape[1:]),
        details={"features": {"kind": spec.model.features, "key": fs.key,
                              "cache": "hit" if fs.cache_hit else "miss",
                              "extraction_seconds": round(fs.seconds, 3),
                              "path": str(fs.path)}})


def birds_image_inputs(spec: JobSpec, birds, seed: int, initial_epoch: int):
    """Images decoded from disk as batches are needed (fine-tuning)."""
    from cvtrain.data.birds import image_stream, split_indices, training_image_stream
    from cvtrain.data.pipeline import Splits

    t, d = spec.training, spec.data
    tr, val = split_indices(len(birds.train_files), d.validation_split)
    files = birds.train_files
    classes = birds.num_classes
    return Splits(
        train=training_image_stream([files[i] for i in tr], birds.train_labels[tr], classes,
                                    d.image_size, t.batch_size, t.epochs, seed, initial_epoch),
        validation=image_stream([files[i] for i in val], birds.train_labels[val], d.image_size,
                                t.batch_size, classes),
        test=image_stream(birds.test_files, birds.test_labels, d.image_size, t.batch_size,
                          classes),
        steps_per_epoch=math.ceil(len(tr) / t.batch_size), train_size=len(tr),
        validation_size=len(val), test_size=len(birds.test_files),
        input_shape=(d.image_size, d.image_size, 3))


def image_errors(data):
    """For datasets read from image files, name the file behind a decode failure."""
    import contextlib

    if hasattr(data, "train_files"):
        from cvtrain.data.birds import image_errors as named_errors

        return named_errors(data.train_files + data.test_files)
    return contextlib.nullcontext()


def build_optimizer(spec: JobSpec):
    import keras

    opt = spec.training.optimizer
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.learning_rate)
    return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)


def make_callbacks(spec: JobSpec, run: runs.RunDir, log: RunLog, splits, epochs: int,
                   seed: int, resume, elapsed_before: float, uploader):
    """Keras callbacks: epoch timing and history.csv, progress, early stopping, TensorBoard,
    then the per-epoch checkpoint and the results upload (in that order, each epoch)."""
    import keras

    from cvtrain import checkpoint

    class EpochRecorder(keras.callbacks.Callback):
        """Times the training part of each epoch (validation excluded), appends history.csv
        as each epoch ends and prints one line per epoch."""

        def __init__(self, rows: list[dict]):
            super().__init__()
            self.rows = rows
            with open(run.file(runs.HISTORY), "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(HISTORY_COLUMNS)
                writer.writerows([[r[c] for c in HISTORY_COLUMNS] for r in rows])

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

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose counters and best weights survive a restart."""

        def state(self) -> dict:
            best = self.best if self.best is None else float(self.best)
            return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if resume is not None and resume.early_stopping:
                self.wait = resume.early_stopping["wait"]
                if resume.early_stopping["best"] is not None:
                    self.best = resume.early_stopping["best"]
                self.best_epoch = resume.early_stopping["best_epoch"]
                self.best_weights = resume.best_weights()

    class Checkpointer(keras.callbacks.Callback):
        """Saves the checkpoint of each completed epoch, then syncs the run folder."""

        def on_epoch_end(self, epoch, logs=None):
            es_state = early.state() if early is not None else None
            best = early.best_weights if early is not None and early.restore_best_weights else None
            elapsed = elapsed_before + time.perf_counter() - t_attempt
            checkpoint.write(run.path, self.model, epoch + 1, seed, elapsed, es_state, best)
            if uploader is not None:
                uploader.sync()

    rows = [] if resume is None else read_history(run)[:resume.epoch]
    recorder = EpochRecorder(rows)
    callbacks = [recorder]
    if log.interactive:
        callbacks.insert(0, log.progress_callback(splits.steps_per_epoch, epochs))
    es = spec.training.early_stopping
    early = None
    if es is not None:
        early = ResumableEarlyStopping(monitor=es.monitor, patience=es.patience,
                                       restore_best_weights=es.restore_best_weights, verbose=0)
        callbacks.append(early)
    callbacks.append(keras.callbacks.TensorBoard(
        log_dir=str(run.file(runs.TENSORBOARD)), write_graph=False, update_freq="epoch"))
    callbacks.append(Checkpointer())
    t_attempt = time.perf_counter()
    return recorder, callbacks


def read_history(run: runs.RunDir) -> list[dict]:
    """The rows of an earlier attempt's history.csv (for a resumed run)."""
    try:
        with open(run.file(runs.HISTORY), newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    out = []
    for row in rows:
        parsed = {k: (float(v) if v not in ("", "None") else None) for k, v in row.items()}
        parsed["epoch"] = int(parsed["epoch"])
        parsed["train_seconds"] = parsed["seconds"]
        out.append(parsed)
    return out


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


class Terminated(Exception):
    """SIGTERM arrived (e.g. a spot instance's reclaim notice)."""


@contextlib.contextmanager
def sigterm_raises():
    """While training, SIGTERM raises :class:`Terminated` in the main thread, so the run
    can report, sync its last checkpoint and exit with :data:`checkpoint.EXIT_TERMINATED`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(spec: JobSpec, out: Path | None = None, run_id: str | None = None,
            log: RunLog | None = None, results: str | None = None,
            endpoint_url: str | None = None) -> RunResult:
    """Train and evaluate ``spec``; leave a complete run folder; return its metrics.

    With ``results`` (a folder or ``s3://`` URI) the run folder is mirrored there as it is
    written, ``manifest.json`` last. An incomplete run with the same id (here, or in
    ``results``) that has a checkpoint is resumed from its last completed epoch. The
    dataset is loaded before a new run folder is made, so a missing or corrupt dataset
    leaves nothing behind.
    """
    from cvtrain import checkpoint

    started = datetime.now(UTC)
    t_start = time.perf_counter()
    log = log or RunLog()
    import_tensorflow_quietly()
    run = runs.RunDir.claim(out or runs.default_out_dir(), spec.name, run_id)
    uploader = None
    if results is not None:
        from cvtrain.storage import RunUploader, download_run

        uploader = RunUploader(run.path, results, endpoint_url=endpoint_url)
        uploader.check()  # a complete run with this id in the results: refuse before any work
        if not run.path.exists() and run_id is not None:
            download_run(results, spec.name, run.run_id, run.path, endpoint_url=endpoint_url)
    resume = None
    if run.path.exists():
        checkpoint.recover(run.path)
        resume = checkpoint.read(run.path)
        if resume is not None:
            earlier = run.file(runs.SPEC)
            if earlier.is_file() and earlier.read_text(encoding="utf-8") != spec.to_yaml():
                raise UsageError(f"{run.path}: this run id was started with a different spec; "
                                 "choose another --run-id")
            if resume.epoch >= spec.training.epochs:
                resume = None  # it finished training but not the rest: redo cleanly
    data = load_dataset(spec, log)
    if resume is None:
        run.prepare()
    log.attach_file(run.file(runs.LOG))
    try:
        with sigterm_raises():
            return _run(spec, data, run, log, started, t_start, resume, uploader)
    except Terminated:
        log.print(f"[bold red]terminated[/]: stopped by SIGTERM; the checkpoint of the last "
                  f"completed epoch is kept; rerun with --run-id {run.run_id} to resume")
        log.detach_file()
        if uploader is not None:
            uploader.sync()
        raise RunTerminated(f"{run.path}: stopped by SIGTERM; resume with --run-id "
                            f"{run.run_id}") from None
    finally:
        log.detach_file()


class RunTerminated(CvtrainError):
    exit_code = 75  # checkpoint.EXIT_TERMINATED


def _run(spec: JobSpec, data, run: runs.RunDir, log: RunLog, started, t_start, resume,
         uploader) -> RunResult:
    import keras

    from cvtrain import checkpoint
    from cvtrain.models import build_model

    run.file(runs.SPEC).write_text(spec.to_yaml(), encoding="utf-8")
    if resume is not None:
        seed = resume.seed
    else:
        seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    log.print(f"[bold]run[/] {spec.name} / {run.run_id} -> {run.path}")
    if resume is not None:
        log.print(f"[bold]resumed[/] from the checkpoint of epoch {resume.epoch}")
    log.print(f"[bold]data[/]: {spec.data.dataset} from {data.source} (sha256 {data.sha256[:12]})")
    if uploader is not None:
        uploader.sync()  # fail now, not after an epoch, if the results location is unusable
        log.print(f"[bold]results[/]: mirrored to {uploader.remote}")

    device = configure_device(spec, seed)
    t = spec.training
    epochs = t.epochs
    initial_epoch = resume.epoch if resume else 0
    classes = list(data.class_names)
    runs.write_json(run.file(runs.CLASSES), classes)
    splits = prepare_inputs(spec, data, seed, log, initial_epoch)
    log.print(f"[bold]split[/]: {splits.train_size} train, {splits.validation_size} validation, "
              f"{splits.test_size} test images; {len(classes)} classes; "
              f"device {device['type']}{' (mixed precision)' if device['mixed_precision'] else ''}")

    if resume is not None:
        # weights, optimizer state and compile settings as they were after that epoch
        model = keras.models.load_model(resume.model_path)
    else:
        model = build_model(spec.model, splits.input_shape, len(classes))
        jit = {"auto": "auto", "on": True, "off": False}[t.jit_compile]
        model.compile(optimizer=build_optimizer(spec), loss="categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=jit,
                      steps_per_execution=t.steps_per_execution)
    log.print(f"[bold]model[/]: {spec.model.name}, {model.count_params():,} parameters")

    elapsed_before = resume.elapsed_seconds if resume else 0.0
    recorder, callbacks = make_callbacks(spec, run, log, splits, epochs, seed, resume,
                                         elapsed_before, uploader)
    t_fit = time.perf_counter()
    with image_errors(data):
        model.fit(splits.train, validation_data=splits.validation, epochs=epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=splits.steps_per_epoch,
                  callbacks=callbacks, verbose=0, shuffle=False)  # the stream shuffles itself
        fit_seconds = time.perf_counter() - t_fit
        rows = recorder.rows
        test = model.evaluate(splits.test, verbose=0, return_dict=True)
    model.save(run.file(runs.MODEL))
    plot_curves(rows, run.file(runs.CURVES), title=f"{spec.name} ({run.run_id})")

    es = spec.training.early_stopping
    monitor = es.monitor if es else "val_loss"
    attempt = [r for r in rows if r["epoch"] > initial_epoch]  # this process's epochs
    timed = attempt[1:] or attempt
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
        "resumed_from_epoch": resume.epoch if resume else None,
        "wall_seconds": round(elapsed_before + time.perf_counter() - t_start, 3),
        "fit_seconds": round(fit_seconds, 3),
        # over all epochs but the first (graph tracing and warm-up), validation excluded
        "train_images_per_second": (round(train_images / train_seconds, 1)
                                    if train_seconds else None),
        "seed": seed,
        "report": {"test_accuracy": spec.report.test_accuracy, "test_loss": spec.report.test_loss},
        "dataset": {"name": spec.data.dataset, "source": str(data.source), "sha256": data.sha256,
                    "train": splits.train_size, "validation": splits.validation_size,
                    "test": splits.test_size, "classes": len(classes), **splits.details},
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
    checkpoint.remove(run.path)  # model.keras is the result; the checkpoint served its purpose
    run.finalize()
    if uploader is not None:
        uploader.finish()
        log.print(f"[bold]results[/]: complete in {uploader.remote}")
    return RunResult(run, metrics)
