"""One training run, top to bottom: data -> model -> fit -> evaluate -> save.

:func:`run_job` is what ``cvtrain run`` calls in every backend; it knows nothing of where
it runs. It writes the run folder described in :mod:`cvtrain.runs`, ``manifest.json``
last. The dataset (:mod:`cvtrain.data.registry`) turns its files into streams, the model
registry builds the network; callbacks, the device, checkpoints and ``metrics.json`` each
live in their own module beside this one.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cvtrain import runs
from cvtrain.errors import UsageError
from cvtrain.paths import default_out_dir
from cvtrain.report import RunLog, plot_curves, summary_table
from cvtrain.spec import JobSpec, check_local_paths, input_kind
from cvtrain.spec.checks import is_uri
from cvtrain.training import checkpoint
from cvtrain.training.backend import select_backend
from cvtrain.training.callbacks import make_callbacks
from cvtrain.training.device import configure_device, steps_per_execution
from cvtrain.training.interrupt import RunTerminated, Terminated, sigterm_raises
from cvtrain.training.metrics import run_metrics


@dataclass
class RunResult:
    run: runs.RunDir
    metrics: dict


def run_job(spec: JobSpec, out: Path | None = None, run_id: str | None = None,
            log: RunLog | None = None, results: str | None = None,
            endpoint_url: str | None = None) -> RunResult:
    """Train and evaluate ``spec``; leave a complete run folder; return its metrics.

    With ``results`` (a folder or ``s3://`` URI) the run folder is mirrored there as it is
    written, ``manifest.json`` last. An incomplete run with the same id (here, or in
    ``results``) that has a checkpoint is resumed from its last completed epoch. Local
    paths are checked and the dataset is loaded before a new run folder is made, so a
    missing or corrupt dataset leaves nothing behind.
    """
    from cvtrain.data.registry import get_dataset

    started = datetime.now(UTC)
    t_start = time.perf_counter()
    log = log or RunLog()
    check_local_paths(spec)
    dataset = get_dataset(spec.data.dataset)
    backend = select_backend(spec.training.backend, deterministic=spec.seed is not None)
    run = runs.RunDir.claim(out or default_out_dir(), spec.name, run_id)
    uploader = None
    if results is not None:
        from cvtrain.storage import RunUploader, download_run

        uploader = RunUploader(run.path, results, endpoint_url=endpoint_url)
        uploader.check()  # a complete run with this id in the results: refuse before any work
        if not run.path.exists() and run_id is not None:
            download_run(results, spec.name, run.run_id, run.path, endpoint_url=endpoint_url)
    resume = _resume_point(run, spec)
    data = dataset.load(spec.data, _local(spec.data.path, log), progress=log.interactive)
    if resume is None:
        run.prepare()
    log.attach_file(run.file(runs.LOG))
    try:
        with sigterm_raises():
            return _train(spec, backend, dataset, data, run, log, started, t_start, resume,
                          uploader)
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


def _local(path: str | None, log: RunLog) -> str | Path | None:
    """A dataset location made local: a URI (``s3://...``) is pulled into the cache once."""
    if path is None or not is_uri(path):
        return path
    from cvtrain.storage import localize

    return localize(path, progress=log.interactive)


def _resume_point(run: runs.RunDir, spec: JobSpec) -> checkpoint.Resume | None:
    """The checkpoint to continue from, when this run id was started before with this spec."""
    if not run.path.exists():
        return None
    checkpoint.recover(run.path)
    resume = checkpoint.read(run.path)
    if resume is None:
        return None
    earlier = run.file(runs.SPEC)
    if earlier.is_file() and earlier.read_text(encoding="utf-8") != spec.to_yaml():
        raise UsageError(f"{run.path}: this run id was started with a different spec; "
                         "choose another --run-id")
    if resume.epoch >= spec.training.epochs:
        return None  # it finished training but not the rest: redo cleanly
    return resume


def build_optimizer(spec: JobSpec):
    import keras

    opt = spec.training.optimizer
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.learning_rate)
    return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)


def _train(spec: JobSpec, backend: str, dataset, data, run: runs.RunDir, log: RunLog, started,
           t_start, resume, uploader) -> RunResult:
    import keras

    from cvtrain.models import build_model

    # ---- the run folder and the seed
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

    # ---- data: the dataset's streams for the kind of input this model takes
    device = configure_device(spec, seed, backend)
    t = spec.training
    initial_epoch = resume.epoch if resume else 0
    classes = list(data.class_names)
    runs.write_json(run.file(runs.CLASSES), classes)
    splits = dataset.streams(spec, data, input_kind(spec), seed, log, initial_epoch)
    spe = steps_per_execution(t.steps_per_execution, splits.steps_per_epoch, device["type"])
    device["steps_per_execution"] = spe
    precision = f", {device['precision_policy']}" if device["mixed_precision"] else ""
    log.print(f"[bold]split[/]: {splits.train_size} train, {splits.validation_size} validation, "
              f"{splits.test_size} test images; {len(classes)} classes; "
              f"{backend} on {device['type']}{precision}, {spe} steps per execution")

    # ---- model: as it was after the last completed epoch, or new; ``network`` is what
    # model.keras holds, ``model`` what trains (the dataset's layers in front, if any)
    if resume is not None:
        model = resume.load_model()  # weights, optimizer, compile, random states
        network = model.layers[-1] if splits.wrap else model
    else:
        network = build_model(spec.model, splits.input_shape, len(classes))
        model = splits.wrap(network) if splits.wrap else network
        jit = {"auto": "auto", "on": True, "off": False}[t.jit_compile]
        model.compile(optimizer=build_optimizer(spec), loss="categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=jit, steps_per_execution=spe)
    log.print(f"[bold]model[/]: {spec.model.name}, {network.count_params():,} parameters")

    # ---- fit, then evaluate on the test split
    elapsed_before = resume.elapsed_seconds if resume else 0.0
    recorder, callbacks = make_callbacks(spec, run, log, splits, t.epochs, seed, resume,
                                         elapsed_before, uploader)
    t_fit = time.perf_counter()
    with dataset.errors(data):
        model.fit(splits.train, validation_data=splits.validation, epochs=t.epochs,
                  initial_epoch=initial_epoch, steps_per_epoch=splits.steps_per_epoch,
                  callbacks=callbacks, verbose=0, shuffle=False)  # the stream shuffles itself
        fit_seconds = time.perf_counter() - t_fit
        test = model.evaluate(splits.test, verbose=0, return_dict=True)

    # ---- save: model, curves, metrics, then the manifest (last: the run is complete)
    rows = recorder.rows
    network.save(run.file(runs.MODEL))
    plot_curves(rows, run.file(runs.CURVES), title=f"{spec.name} ({run.run_id})")
    metrics = run_metrics(spec=spec, run=run, data=data, splits=splits, model=network, test=test,
                          rows=rows, resume=resume, seed=seed, device=device, started=started,
                          wall_seconds=elapsed_before + time.perf_counter() - t_start,
                          fit_seconds=fit_seconds)
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
