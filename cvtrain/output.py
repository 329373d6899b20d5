"""How cvtrain prints tables: identifiers whole at any width, plain text off a terminal.

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

import copy
import io

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

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
