"""``metrics.json``: what a run measured, and everything needed to trust and compare it
later (the report's numbers, the data's checksum, versions, device, timings)."""

from __future__ import annotations

from datetime import UTC, datetime

from cvtrain.training.provenance import git_revision, package_versions


def f32(value):
    """A number the model computed in float32 (a loss, an accuracy, a learning rate) as the
    shortest decimal that is that float32: 0.476, not 0.47600001096725464. No information
    is lost; None stays None."""
    if value is None:
        return None
    import numpy as np

    return float(str(np.float32(value)))


def best_epoch(rows: list[dict], monitor: str) -> int:
    """The epoch whose ``monitor`` value was best (the last one when none was recorded)."""
    values = [(r[monitor], r["epoch"]) for r in rows if r.get(monitor) is not None]
    if not values:
        return rows[-1]["epoch"] if rows else 0
    pick = max if monitor.endswith("accuracy") else min
    return pick(values, key=lambda v: v[0])[1]


def images_per_second(rows: list[dict], initial_epoch: int, train_size: int) -> float | None:
    """Training throughput of this process's epochs but the first (graph tracing and
    warm-up), validation excluded."""
    attempt = [r for r in rows if r["epoch"] > initial_epoch]
    timed = attempt[1:] or attempt
    seconds = sum(r["train_seconds"] for r in timed)
    return round(train_size * len(timed) / seconds, 1) if seconds else None


def run_metrics(*, spec, run, data, splits, model, test: dict, rows: list[dict], resume,
                seed: int, device: dict, started: datetime, wall_seconds: float,
                fit_seconds: float) -> dict:
    """The content of ``metrics.json``."""
    es = spec.training.early_stopping
    monitor = es.monitor if es else "val_loss"
    initial_epoch = resume.epoch if resume else 0
    return {
        "job": spec.name,
        "run_id": run.run_id,
        "test_accuracy": f32(test["accuracy"]),
        "test_loss": f32(test["loss"]),
        "best_epoch": best_epoch(rows, monitor),
        "best_epoch_monitor": monitor,
        "weights_restored": bool(es and es.restore_best_weights),
        "epochs_run": len(rows),
        "epochs_max": spec.training.epochs,
        "resumed_from_epoch": resume.epoch if resume else None,
        "resumed_from_step": resume.step if resume else None,  # of the epoch after that
        "wall_seconds": round(wall_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
        "train_images_per_second": images_per_second(rows, initial_epoch, splits.train_size),
        "seed": seed,
        "report": {"test_accuracy": spec.report.test_accuracy, "test_loss": spec.report.test_loss},
        "dataset": {"name": spec.data.dataset, "source": str(data.source), "sha256": data.sha256,
                    "train": splits.train_size, "validation": splits.validation_size,
                    "test": splits.test_size, "classes": len(data.class_names),
                    "synthetic": bool(getattr(data, "synthetic", False)),
                    **splits.details},
        "parameters": int(model.count_params()),
        "versions": package_versions(device["backend"]),
        "git_revision": git_revision(),
        "device": device,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
