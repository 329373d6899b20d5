"""What a person sees on the terminal: tables, the run's log, progress bars, the run's
summary table.

How cvtrain prints tables: identifiers whole at any width, plain text off a terminal.
Where a table is built, the columns that hold identifiers people copy (job names, run ids,
URIs, paths, images) are marked ``no_wrap=True``. :func:`print_table` then

- pins each such column to its longest value, so Rich shrinks or wraps the other columns
  instead of cutting an id (``resnet50_fea…``) or folding it over two lines;
- prints the title as a line of its own (a title is often a path or an id too);
- when stdout is not a terminal (a pipe, a file, CI, cron, Batch or CloudWatch logs), or
  the ids cannot fit the terminal, prints the table as plain text: no box characters,
  columns two spaces apart, as wide as its content, no trailing spaces; fit for grep.

Colours follow Rich's own rules: none off a terminal, none under ``NO_COLOR``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def fmt_num(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_diff(ours, theirs, digits: int = 4) -> str:
    if ours is None or theirs is None:
        return "-"
    diff = ours - theirs
    return f"{diff:+.{digits}f}"


def fmt_seconds(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


@contextlib.contextmanager
def byte_progress(enabled: bool, total: int | None, label: str, transient: bool = False,
                  terminal_only: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich bytes/speed/ETA bar on stderr; yields ``advance(n)``. With ``terminal_only``
    nothing is drawn unless stderr is a terminal (otherwise rich prints the final state)."""
    if (not enabled or (total is not None and total <= 0)
            or (terminal_only and not sys.stderr.isatty())):
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=transient) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class RunLog:
    """Prints to the terminal and, while a run is on, to its ``log.txt`` as plain text."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=False, highlight=False)
        self._file = None
        self._file_console: Console | None = None
        self.live = None  # the progress display while one is drawn (a RichProgress sets it)

    def end_live(self) -> None:
        """Stop a progress display left running (Keras does not end callbacks when Ctrl-C
        cuts an epoch), so the terminal gets its cursor back."""
        live, self.live = self.live, None
        if live is not None:
            live.stop()

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def attach_file(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in detach
        self._file_console = Console(file=self._file, width=110, no_color=True,
                                     highlight=False, force_terminal=False)

    def detach_file(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._file_console = None

    def print(self, *objects) -> None:
        # long lines (paths) stay whole rather than folded at the terminal width; tables
        # keep their ids whole, and are plain text in log.txt and off a terminal
        emit(self.console, *objects)
        if self._file_console is not None:
            emit(self._file_console, *objects)
            self._file.flush()

    def epoch_line(self, row: dict, epochs: int) -> None:
        width = len(str(epochs))
        parts = [f"epoch {row['epoch']:>{width}}/{epochs}",
                 f"loss {fmt_num(row['loss'])}", f"acc {fmt_num(row['accuracy'])}",
                 f"val_loss {fmt_num(row['val_loss'])}", f"val_acc {fmt_num(row['val_accuracy'])}",
                 fmt_seconds(row["seconds"])]
        self.print("  ".join(parts))

    def progress_callback(self, steps: int, epochs: int):
        """A Keras callback drawing a rich progress bar for the batches of each epoch."""
        import keras
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = self.console
        run_log = self

        class RichProgress(keras.callbacks.Callback):
            async_safe = True  # rich is thread-safe: let Keras dispatch batch hooks async

            def on_train_begin(self, logs=None):
                self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                         MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                                         console=console, transient=True)
                self.progress.start()
                run_log.live = self.progress
                self.task = None

            def on_epoch_begin(self, epoch, logs=None):
                self.task = self.progress.add_task(f"epoch {epoch + 1}/{epochs}", total=steps,
                                                   stats="")

            def on_train_batch_end(self, batch, logs=None):
                if self.task is None:
                    return
                logs = logs or {}
                stats = f"loss {fmt_num(logs.get('loss'))} acc {fmt_num(logs.get('accuracy'))}"
                self.progress.update(self.task, completed=batch + 1, stats=stats)

            def on_epoch_end(self, epoch, logs=None):
                # the epoch's summary line replaces its bar
                self.progress.remove_task(self.task)
                self.task = None

            def on_train_end(self, logs=None):
                run_log.live = None
                self.progress.stop()

        return RichProgress()


def summary_table(metrics: dict, run_path: Path) -> Group:
    """Our accuracy and loss beside the report's, with the differences, epochs and time;
    then the run folder on a line of its own (a path is never wrapped inside a table)."""
    from cvtrain.runs import SYNTHETIC_NOTE, is_synthetic

    report = metrics.get("report") or {}
    synthetic = is_synthetic(metrics)
    title = f"{metrics['job']} / {metrics['run_id']}" + (" (synthetic data)" if synthetic else "")
    table = Table(title=title, title_justify="left",
                  caption=SYNTHETIC_NOTE if synthetic else None, caption_justify="left")
    table.add_column("")
    table.add_column("ours", justify="right")
    table.add_column("report", justify="right")
    table.add_column("difference", justify="right")
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        table.add_row(label, fmt_num(metrics[key]), fmt_num(report.get(key)),
                      "n/a" if synthetic else fmt_diff(metrics[key], report.get(key)))
    epochs = f"{metrics['epochs_run']} (best {metrics['best_epoch']})"
    if metrics.get("resumed_from_step"):
        epochs += (f", resumed in epoch {metrics['resumed_from_epoch'] + 1} at step "
                   f"{metrics['resumed_from_step']}")
    elif metrics.get("resumed_from_epoch"):
        epochs += f", resumed after epoch {metrics['resumed_from_epoch']}"
    table.add_row("epochs", epochs, "", "")
    table.add_row("wall time", fmt_seconds(metrics["wall_seconds"]), "", "")
    features = (metrics.get("dataset") or {}).get("features")
    if features:
        how = ("cache hit" if features["cache"] == "hit" else
               f"extracted in {fmt_seconds(features['extraction_seconds'])}")
        table.add_row("features", f"{features['kind']}, {how}", "", "")
    ips = metrics.get("train_images_per_second")
    table.add_row("train images/s", "-" if ips is None else f"{ips:,.0f}", "", "")
    return Group(table, Text(f"run folder: {run_path}"))


# ---------------------------------------------------------------------------- tables

#: wider than any table we print: off a terminal, a table is as wide as its content
_UNLIMITED = 100_000


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) as cvtrain's commands use it."""
    return Console(stderr=stderr, highlight=False)


def _pin_identifiers(table: Table, console: Console) -> None:
    options = console.options.update_width(_UNLIMITED)
    for column in table.columns:
        if not column.no_wrap:
            continue
        widest = max((Measurement.get(console, options, cell).maximum
                      for cell in (column.header, *column.cells)), default=0)
        column.min_width = max(column.min_width or 0, widest)


def _plain(table: Table, console: Console) -> str:
    table.box = None
    table.show_edge = False
    table.pad_edge = False
    buffer = io.StringIO()
    wide = Console(file=buffer, width=_UNLIMITED, highlight=False, no_color=console.no_color,
                   color_system=console.color_system if console.is_terminal else None,
                   force_terminal=console.is_terminal)
    wide.print(table)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` on ``console`` (default: stdout) with its identifiers whole. The
    table itself is left as it was (a run log prints the same table twice)."""
    console = console or Console(highlight=False)
    table = copy.copy(table)
    _pin_identifiers(table, console)
    title, table.title = table.title, None
    if title:
        console.print(Text(str(title), style="bold" if console.is_terminal else ""),
                      soft_wrap=True)
    needed = Measurement.get(console, console.options.update_width(_UNLIMITED), table).minimum
    if console.is_terminal and needed <= console.width:
        console.print(table)
        return
    console.file.write(_plain(table, console))
    console.file.flush()


def emit(console: Console, *objects) -> None:
    """Print each object: tables with :func:`print_table`, groups one part after another,
    anything else unwrapped (a long path stays one line for the terminal to fold)."""
    for obj in objects:
        if isinstance(obj, Table):
            print_table(obj, console)
        elif isinstance(obj, Group):
            emit(console, *obj.renderables)
        else:
            console.print(obj, soft_wrap=True)
