"""One training run, top to bottom: data -> model -> fit -> evaluate -> save.

:func:`run_job` is what ``cvtrain run`` calls in every runner; it knows nothing of where
it runs. It writes the run folder described in :mod:`cvtrain.runs`, ``manifest.json``
last. The dataset (:mod:`cvtrain.data.registry`) turns its files into streams, the model
registry builds the network; callbacks, the device, checkpoints and ``metrics.json`` each
live in their own module beside this one.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from cvtrain import manifest, runs, stop
from cvtrain.console import RunLog, summary_table
from cvtrain.errors import UsageError
from cvtrain.paths import default_out_dir
from cvtrain.plots import plot_curves
from cvtrain.runs import RunResult
from cvtrain.spec import JobSpec, check_local_paths, input_kind
from cvtrain.spec.checks import is_uri
from cvtrain.training import checkpoint, raw_image_model
from cvtrain.training.backend import select_backend
from cvtrain.training.callbacks import make_callbacks
from cvtrain.training.device import configure_device, data_parallel, steps_per_execution
from cvtrain.training.fitting import fit
from cvtrain.training.identity import (
    fingerprint,
    refuse_other_spec,
    same_run,
    same_run_in_results,
)
from cvtrain.training.interrupt import Kept, RunInterrupted, RunTerminated
from cvtrain.training.loop import chosen_loop, scan_steps
from cvtrain.training.metrics import run_metrics


def run_job(spec: JobSpec, out: Path | None = None, run_id: str | None = None,
            log: RunLog | None = None, results: str | None = None,
            endpoint_url: str | None = None, force: bool = False,
            rerun: str | None = None) -> RunResult:
    """Train and evaluate ``spec``; leave a complete run folder; return its metrics.

    With ``results`` (a folder or ``s3://`` URI) the run folder is mirrored there as it is
    written, ``manifest.json`` last. An incomplete run with the same id (here, or in
    ``results``) that has a checkpoint is resumed from it (an epoch's end or a step within
    one); a complete one is reused (its copy in ``results`` completed first, if an earlier
    attempt stopped during the upload). Local paths are checked and the dataset is loaded
    before a new run folder is made, so a missing or corrupt dataset leaves nothing behind.

    A seeded run without a ``run_id`` is never computed twice: when a complete run of the
    job under ``out`` has the same :func:`fingerprint`, it is reused (``force`` trains
    anyway). Unseeded runs are not meant to repeat and always train.

    A stop request (SIGTERM, see :mod:`cvtrain.stop`) ends the run at the next safe point
    with :class:`RunTerminated`, whose message says what was kept. Ctrl-C ends it at once
    with :class:`RunInterrupted`: the progress display is stopped, and one line, also in
    ``log.txt``, says which checkpoint was kept and the command that resumes (``rerun``:
    the command line that ran this job, without ``--run-id``, when the caller knows it).

    A new run that fails (or is interrupted) before its first checkpoint leaves no run
    folder behind: nothing in it could be resumed or trusted. Any other failure is written
    at the end of its ``log.txt``.
    """
    from cvtrain.data.registry import get_dataset

    started = datetime.now(UTC)
    t_start = time.perf_counter()
    log = log or RunLog()
    check_local_paths(spec)
    dataset = get_dataset(spec.data.dataset)
    backend = select_backend(spec.training.backend, deterministic=spec.seed is not None)
    run = runs.RunFolder.new(out or default_out_dir(), spec.name, run_id)
    kept = Kept(run, rerun)
    attempt = {"fresh": False, "logged": False}  # a new folder made; log.txt attached
    try:
        stop.check()
        uploader = None
        if results is not None:
            from cvtrain.storage import RunUploader, download_run

            uploader = RunUploader(run, results, endpoint_url=endpoint_url)
            kept.remote = uploader.remote
            remote_complete = uploader.remote_complete()  # an unusable location fails now
            if not run.path.exists() and run_id is not None:
                download_run(run.under(results), run.path, endpoint_url=endpoint_url)
            elif remote_complete and not run.is_complete():
                raise UsageError(f"{uploader.remote}: a complete run with this id is in the "
                                 f"results, but {run.path} holds an unfinished one; remove "
                                 "that folder to fetch the complete run, or choose another "
                                 "--run-id")
        if run.is_complete():
            return _reuse(spec, run, uploader, log, kept)
        resume = _resume_point(run, spec)
        if resume is not None:
            kept.epoch(resume.epoch, remote=False, step=resume.step)
        data = dataset.load(spec.data, _local(spec.data.path, log), progress=log.interactive)
        stop.check()
        print_ = fingerprint(spec, data.sha256)
        if run_id is None and resume is None and spec.seed is not None and not force:
            same, where = same_run(out or default_out_dir(), spec, print_), ""
            if same is None and results is not None:
                same = same_run_in_results(results, endpoint_url, out or default_out_dir(),
                                            spec, print_)
                where = f" in {results} (fetched into {same.path})" if same else ""
            if same is not None:
                metrics = json.loads(same.file(runs.METRICS).read_text(encoding="utf-8"))
                log.print(f"[bold]reused[/]: {spec.name} / {same.run_id}{where} is a complete "
                          f"run with the same fingerprint (spec, data sha256 "
                          f"{data.sha256[:12]}, seed {spec.seed}, cvtrain version); nothing to "
                          "train (--force trains anyway)")
                log.print(summary_table(metrics, same.path))
                return RunResult(same, metrics)
        if resume is None:
            run.prepare()
            attempt["fresh"] = True
        log.attach_file(run.file(runs.LOG))
        attempt["logged"] = True
        return _train(spec, backend, dataset, data, run, log, started, t_start, resume,
                      uploader, kept, print_)
    except stop.StopRequested:
        message = f"stopped by {stop.signal_name()}: {kept.describe()}"
        log.print(f"[bold red]terminated[/]: {message}")
        raise RunTerminated(f"{run.path}: {message}") from None
    except KeyboardInterrupt:
        log.end_live()  # the terminal gets its cursor back before anything is said
        log.detach_file()
        message = kept.interrupted(attempt["fresh"])
        if attempt["logged"] and run.path.is_dir() and not run.is_complete():
            _append_log(run, message)
        raise RunInterrupted(message) from None
    except Exception as exc:
        log.detach_file()
        _failed(run, exc, **attempt)
        raise
    finally:
        log.detach_file()


def _append_log(run: runs.RunFolder, line: str) -> None:
    try:
        with open(run.file(runs.LOG), "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:  # the folder went away: the line is on stderr anyway
        pass


def _failed(run: runs.RunFolder, exc: Exception, fresh: bool, logged: bool) -> None:
    """After a failure: a new run folder with no checkpoint goes (nothing in it can be
    resumed, and a half-made run must not be listed); any other that this attempt wrote
    to gets the error as the last line of its log.txt (never a complete run's)."""
    if not logged or not run.path.is_dir() or run.is_complete():
        return
    checkpoint.recover(run.path)
    if fresh and checkpoint.read(run.path) is None:
        run.discard()
        return
    from cvtrain.errors import CvtrainError

    if isinstance(exc, CvtrainError):
        _append_log(run, f"failed: {exc}")
    else:
        first = (str(exc).splitlines() or [""])[0]
        _append_log(run, f"failed: internal error: {type(exc).__name__}: {first}")


def _reuse(spec: JobSpec, run: runs.RunFolder, uploader, log: RunLog, kept: Kept) -> RunResult:
    """A complete run with this id: the same spec is reused (its copy in the results
    completed if an earlier attempt stopped during the upload), another is refused."""
    refuse_other_spec(run, spec, "holds a complete run of")
    if uploader is not None:
        kept.state = "complete"
        remote = uploader.remote_manifest()
        if remote is None:
            log.print(f"[bold]results[/]: completing the upload of {run.path} to "
                      f"{uploader.remote}")
            uploader.finish()
        elif remote != run.file(runs.MANIFEST).read_bytes():
            raise UsageError(f"{uploader.remote}: a different complete run with this id is in "
                             f"the results than in {run.path}; choose another --run-id")
        uploader.drop_checkpoint()
    checkpoint.remove(run.path)
    metrics = json.loads(run.file(runs.METRICS).read_text(encoding="utf-8"))
    log.print(f"[bold]complete[/]: {spec.name} / {run.run_id} is already complete in "
              f"{run.path}; nothing to train")
    log.print(summary_table(metrics, run.path))
    return RunResult(run, metrics)


def _local(path: str | None, log: RunLog) -> str | Path | None:
    """A dataset location made local: a URI (``s3://...``) is pulled into the cache once."""
    if path is None or not is_uri(path):
        return path
    from cvtrain.storage import localize

    return localize(path, progress=log.interactive)


def _resume_point(run: runs.RunFolder, spec: JobSpec) -> checkpoint.Resume | None:
    """The checkpoint to continue from, when this run id was started before with this spec
    (one whose training is over goes straight to evaluation)."""
    if not run.path.exists():
        return None
    checkpoint.recover(run.path)
    resume = checkpoint.read(run.path)
    if resume is None:
        return None
    refuse_other_spec(run, spec, "was started with")
    return resume


def build_optimizer(spec: JobSpec):
    import keras

    opt = spec.training.optimizer
    if opt.name == "adam":
        return keras.optimizers.Adam(learning_rate=opt.learning_rate)
    return keras.optimizers.SGD(learning_rate=opt.learning_rate, momentum=opt.momentum)


def _train(spec: JobSpec, backend: str, dataset, data, run: runs.RunFolder, log: RunLog, started,
           t_start, resume, uploader, kept: Kept, print_: str) -> RunResult:
    import keras

    from cvtrain.data.registry import training_streams
    from cvtrain.models import build_model
    from cvtrain.training.parts_model import in_parts, whole

    # ---- the run folder and the seed
    run.file(runs.SPEC).write_text(spec.to_yaml(), encoding="utf-8")
    if resume is not None:
        seed = resume.seed
    else:
        seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    log.print(f"[bold]run[/] {spec.name} / {run.run_id} -> {run.path}")
    if resume is not None:
        log.print(f"[bold]resumed[/] from the checkpoint of {resume.describe()}")
    synthetic = (", [yellow]synthetic[/]: not comparable with the report"
                 if getattr(data, "synthetic", False) else "")
    log.print(f"[bold]data[/]: {spec.data.dataset} from {data.source} (sha256 {data.sha256[:12]})"
              f"{synthetic}")
    if uploader is not None:
        uploader.sync()  # fail now, not after an epoch, if the results location is unusable
        log.print(f"[bold]results[/]: mirrored to {uploader.remote}")

    # ---- data: the dataset's streams for the kind of input this model takes
    device = configure_device(spec, seed, backend)
    t = spec.training
    initial_epoch = resume.epoch if resume else 0
    classes = list(data.class_names)
    manifest.write_json(run.file(runs.CLASSES), classes)
    splits = training_streams(dataset, spec, data, input_kind(spec), seed, log, initial_epoch,
                              resume.step if resume else 0)
    spe = steps_per_execution(t.steps_per_execution, splits.steps_per_epoch, device["type"],
                              mirrored=backend == "tensorflow" and device["replicas"] > 1)
    device["steps_per_execution"] = spe
    precision = f", {device['precision_policy']}" if device["mixed_precision"] else ""
    log.print(f"[bold]split[/]: {splits.train_size} train, {splits.validation_size} validation, "
              f"{splits.test_size} test images; {len(classes)} classes; "
              f"{backend} on {device['type']}{precision}, {spe} steps per execution"
              + (f", each batch in {device['batch_split']} parts side by side (one core each)"
                 if device["batch_split"] > 1 else ""))
    if device["replicas"] > 1:
        log.print(f"[bold]data parallel[/]: {device['replicas']} devices, "
                  f"{device['replica_batch']} images each of every batch of "
                  f"{device['global_batch']}")

    # ---- on one device, or on several in data parallel (training.devices)
    with data_parallel(backend, device["devices"]):
        # ---- model: as it was at the checkpoint, or new; ``network`` is what
        # model.keras holds, ``model`` what trains (the dataset's layers in front, if any;
        # each batch in parts, if split)
        if resume is not None:
            # weights, optimizer, compile, random states
            model = in_parts(resume.load_model(), device["batch_split"])
            network = whole(model).layers[-1] if splits.wrap else whole(model)
        else:
            network = build_model(spec.model, splits.input_shape, len(classes))
            model = in_parts(splits.wrap(network) if splits.wrap else network,
                             device["batch_split"])
            jit = {"auto": "auto", "on": True, "off": False}[t.jit_compile]
            model.compile(optimizer=build_optimizer(spec), loss="categorical_crossentropy",
                          metrics=["accuracy"], jit_compile=jit, steps_per_execution=spe)
        log.print(f"[bold]model[/]: {spec.model.name}, {network.count_params():,} parameters")
        if backend == "jax" and chosen_loop(device["type"]) == "scan":
            device["scan_steps"] = scan_steps(model)

        # ---- fit, then evaluate on the test split
        elapsed_before = resume.elapsed_seconds if resume else 0.0
        recorder, callbacks = make_callbacks(spec, run, log, splits, t.epochs, seed, resume,
                                             elapsed_before, uploader, kept)
        # a checkpoint whose training is over (killed while finishing) goes straight on: fit
        # runs no epoch, only what ends training (early stopping's best weights)
        last_epoch = resume.epoch if resume is not None and resume.finished else t.epochs
        t_fit = time.perf_counter()
        with dataset.errors(data):
            fit(model, splits, callbacks, initial_epoch, last_epoch, resume)
            fit_seconds = time.perf_counter() - t_fit
            stop.check()
            # from here to the local manifest a stop waits (seconds): the run folder is whole
            with stop.deferred():
                test = model.evaluate(splits.test, verbose=0, return_dict=True)

    # ---- save: model, curves, metrics, then the manifest (last: the run is complete)
    with stop.deferred():
        rows = recorder.rows
        network.save(run.file(runs.MODEL))
        raw_image_model.save(dataset, spec, splits, network, whole(model), run, seed,
                             backend, device["precision_policy"], log)
        plot_curves(rows, run.file(runs.CURVES), title=f"{spec.name} ({run.run_id})")
        metrics = run_metrics(spec=spec, run=run, data=data, splits=splits, model=network,
                              test=test, rows=rows, resume=resume, seed=seed, device=device,
                              started=started,
                              wall_seconds=elapsed_before + time.perf_counter() - t_start,
                              fit_seconds=fit_seconds)
        metrics["fingerprint"] = print_
        manifest.write_json(run.file(runs.METRICS), metrics)
        log.print(summary_table(metrics, run.path))
        keras.backend.clear_session()
        log.detach_file()  # log.txt is complete before the manifest lists it
        run.finalize()
    # the checkpoint goes only once every copy of the run is complete
    if uploader is not None:
        kept.state = "complete"
        uploader.finish()  # a stop lets the objects in flight finish, then ends here
        uploader.drop_checkpoint()
        log.print(f"[bold]results[/]: complete in {uploader.remote}")
    checkpoint.remove(run.path)
    return RunResult(run, metrics)
