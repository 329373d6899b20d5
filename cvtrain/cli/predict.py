"""``cvtrain predict`` and ``cvtrain export``: use what a run trained (its raw-image model,
``classifier.keras``) on images, or write it in a format for serving."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from cvtrain.cli.results import ENDPOINT_HELP, ROOT_HELP, RUN_HELP
from cvtrain.console import console, print_table

#: more images than this get a progress bar (on a terminal)
PROGRESS_FROM = 256


class KerasBackend(StrEnum):
    auto = "auto"
    tensorflow = "tensorflow"
    jax = "jax"


BACKEND_HELP = ("Keras backend to load the model on \\[default: auto: $KERAS_BACKEND, else "
                "TensorFlow when installed, else JAX].")


def predict(
    run: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    images: list[str] = typer.Argument(..., metavar="IMAGE",
                                       help="Image files (PNG, JPEG, ...), folders of them "
                                            "(searched recursively), or a CIFAR-100 archive or "
                                            "folder (its test split, with true labels)."),
    top_k: int = typer.Option(3, "--top", "-k", min=1, help="How many classes per image."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (for "
                                 "scripts)."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV: image, rank, class, index, "
                                "probability, label; one row per class."),
    resize: bool = typer.Option(False, "--resize", help="Resize images of another size to "
                                "the model's (bilinear) instead of refusing them; models that "
                                "resize themselves take any size."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per batch."),
    root: str = typer.Option(None, "--root", help=ROOT_HELP),
    backend: KerasBackend = typer.Option(KerasBackend.auto, "--backend", help=BACKEND_HELP),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """Classify images with the model RUN trained: the top classes and probabilities.

    RUN's classifier.keras takes images as they come (uint8 RGB; preprocessing inside)."""
    from cvtrain.errors import DataError, UsageError
    from cvtrain.images import collect
    from cvtrain.serving import accuracy, load
    from cvtrain.serving import predict as run_predictions

    if as_json and as_csv:
        raise UsageError("--json and --csv: choose one")
    err = console(stderr=True)
    loaded = load(run, root, endpoint_url, backend.value, progress=err.is_terminal)
    items = collect(images, loaded.classes, progress=err.is_terminal)
    failed = []

    def on_error(item):
        failed.append(item)
        err.print(f"cvtrain: error: {item.name}: {item.error}", soft_wrap=True, markup=False)

    if err.is_terminal and len(items) > PROGRESS_FROM:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("predict", total=len(items))
            predictions = run_predictions(loaded, items, batch_size, top_k, resize,
                                          on_batch=lambda n: bar.advance(task, n),
                                          on_error=on_error)
    else:
        predictions = run_predictions(loaded, items, batch_size, top_k, resize,
                                      on_error=on_error)
    scored = accuracy(loaded, predictions)
    if as_json:
        _json(loaded, predictions, failed, scored)
    elif as_csv:
        _csv(loaded, predictions)
    else:
        _table(loaded, predictions, scored)
    if scored is not None and as_csv:  # stdout is the CSV alone
        err.print(_accuracy_line(scored), soft_wrap=True)
    if failed:
        raise DataError(f"{len(failed)} of {len(items)} images could not be read (each named "
                        "above); the others were predicted")


def _named(loaded, top) -> list[dict]:
    return [{"class": loaded.classes[i], "index": i, "probability": round(p, 6)}
            for i, p in top]


def _json(loaded, predictions, failed, scored) -> None:
    print(json.dumps({
        "run": loaded.label, "location": str(loaded.path),
        "classes": len(loaded.classes),
        "predictions": [{"image": p.item.name, "label": p.item.label,
                         "top": _named(loaded, p.top)} for p in predictions],
        "errors": [{"image": item.name, "error": item.error} for item in failed],
        "accuracy": scored,
    }, indent=2))


def _csv(loaded, predictions) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["image", "rank", "class", "index", "probability", "label"])
    for p in predictions:
        for rank, (i, prob) in enumerate(p.top, start=1):
            writer.writerow([p.item.name, rank, loaded.classes[i], i, f"{prob:.6f}",
                             p.item.label or ""])


def _accuracy_line(scored: dict) -> str:
    line = (f"accuracy: {scored['accuracy']:.4f} ({scored['correct']} of {scored['images']} "
            "images with a known class)")
    if scored.get("run_test_accuracy") is not None:
        line += f"; the run's test accuracy: {scored['run_test_accuracy']:.4f}"
    return line


def _table(loaded, predictions, scored) -> None:
    k = max((len(p.top) for p in predictions), default=0)
    labelled = any(p.item.label is not None for p in predictions)
    table = Table(title=f"predictions of {loaded.label} ({len(loaded.classes)} classes)",
                  title_justify="left")
    table.add_column("image", no_wrap=True)
    if labelled:
        table.add_column("true class", no_wrap=True)
    for rank in range(1, k + 1):
        table.add_column(f"top {rank}" if rank == 1 else f"{rank}", no_wrap=True)
    for p in predictions:
        cells = [f"{loaded.classes[i]} {prob:.3f}" for i, prob in p.top]
        if labelled:
            label = p.item.label or "-"
            mark = "" if p.item.label is None else (
                " [green]✓[/]" if loaded.classes[p.top[0][0]] == p.item.label else " [red]✗[/]")
            cells.insert(0, label + mark)
        table.add_row(p.item.name, *cells)
    print_table(table)
    if scored is not None:
        print(_accuracy_line(scored))


class Format(StrEnum):
    savedmodel = "savedmodel"
    onnx = "onnx"
    tflite = "tflite"


def export(
    run: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    format_: Format = typer.Option(..., "--format", help="savedmodel: a TensorFlow "
                                   "SavedModel folder; onnx: an .onnx file; tflite: a "
                                   "LiteRT (TensorFlow Lite) .tflite file."),
    out: Path = typer.Option(None, "--out", help="Where to write it (a file path gets .onnx "
                             "or .tflite when it lacks it) \\[default: <job>-<run-id>-"
                             "classifier.onnx / .tflite / -savedmodel/ here]."),
    check: int = typer.Option(8, "--check", min=0, help="Compare the export's predictions "
                              "with the Keras model's on this many random images, by the "
                              "format's own runtime (0: no check)."),
    root: str = typer.Option(None, "--root", help=ROOT_HELP),
    backend: KerasBackend = typer.Option(KerasBackend.auto, "--backend", help=BACKEND_HELP),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """Write the model RUN trained in a format for serving: SavedModel, ONNX, TFLite.

    The export takes raw uint8 RGB images and returns class probabilities, as RUN's
    classifier.keras does; it is checked to predict as Keras does."""
    from cvtrain.export import export_classifier
    from cvtrain.serving import load

    loaded = load(run, root, endpoint_url, backend.value, progress=sys.stderr.isatty())
    written = export_classifier(loaded, format_.value, out, check)
    print(f"{written.path}: {written.describe()}")
