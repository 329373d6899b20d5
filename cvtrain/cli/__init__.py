"""The ``cvtrain`` command line. Commands only parse and print; the work lives elsewhere.

Nothing here imports TensorFlow, boto3 or matplotlib at module level: ``cvtrain --help``,
``cvtrain jobs list`` and ``cvtrain jobs validate`` must answer instantly.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from pathlib import Path

import typer

from cvtrain import __version__, stop
from cvtrain.cli import cloud, data, jobs, predict, results, run
from cvtrain.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, CvtrainError

app = typer.Typer(
    name="cvtrain",
    help="Run computer-vision training experiments from declarative job files.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("run")(run.run)
app.add_typer(jobs.app, name="jobs")
app.add_typer(data.app, name="data")
app.add_typer(results.app, name="results")
app.command("predict")(predict.predict)
app.command("export")(predict.export)
app.command("submit")(cloud.submit)
app.command("status")(cloud.status)
app.command("logs")(cloud.logs)
app.command("cancel")(cloud.cancel)
app.command("run-batch", hidden=True)(cloud.run_batch)


def _version(value: bool) -> None:
    if value:
        print(f"cvtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Run computer-vision training experiments from declarative job files."""


def _exit(code: int) -> None:
    """Exit with ``code``, also when a library left a worker thread behind (a data loader
    interrupted mid-epoch by SIGTERM can block forever in its queue, and Python would wait
    for it at exit): everything of ours is written and closed by now."""
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if others:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _from_ctrl_c(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the causes of ``exc``."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def main() -> None:
    """Console-script entry: user errors become one line on stderr and an exit code."""
    stop.install()  # a SIGTERM from now on is acted on at the next safe point, never lost
    # TensorFlow's C++ INFO/WARNING chatter (oneDNN notices...) is not for our users
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        app(prog_name="cvtrain")
    except CvtrainError as exc:
        # a stop or an interrupt is no error
        kind = "" if exc.exit_code in (EXIT_TERMINATED, EXIT_INTERRUPTED) else "error: "
        print(f"cvtrain: {kind}{exc}", file=sys.stderr)
        _exit(exc.exit_code)
    except SystemExit as exc:
        # Typer turns Ctrl-C outside a run (a download, a transfer) into a silent exit 130
        if exc.code == EXIT_INTERRUPTED and _from_ctrl_c(exc):
            print("cvtrain: interrupted", file=sys.stderr)
            _exit(EXIT_INTERRUPTED)
        raise
    except stop.StopRequested as exc:  # outside a run (a transfer...): nothing half-done
        where = f" {exc.where}" if exc.where and exc.where != "stop requested" else ""
        print(f"cvtrain: stopped by {stop.signal_name()}{where}; what was copied is kept, "
              "rerun the command to continue", file=sys.stderr)
        _exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        print("cvtrain: interrupted", file=sys.stderr)
        _exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug or an environment problem: one line, traceback on demand
        if os.environ.get("CVTRAIN_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        first = (str(exc).splitlines() or [""])[0]
        print(f"cvtrain: internal error: {type(exc).__name__}: {first} "
              f"(at {Path(where.filename).name}:{where.lineno}; "
              "set CVTRAIN_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
