"""``--help`` in the classic Click/Typer style on every Typer version we allow.

Recent Typer releases print a type beside every parameter in their own notation: ``<bool>``
beside each flag (``--help <bool>``), ``<str>``, ``<int range>``, ``<list[str]>``, and
``{job}`` for a required argument in the usage line. :func:`install` brings back what
Typer printed before and what most CLIs print: nothing beside a flag; ``TEXT``,
``INTEGER``, ``PATH``, ``INTEGER RANGE``, ``[local|docker]`` beside the others (a metavar
given by us, such as ``KEY=VALUE``, stays as it is); ``JOB``, ``[FOLDER]``, ``JOB...`` in
the usage line. A Typer without these methods (an older one, already classic, or a newer
one that changed them) is left alone: its help still works, only its look differs.
"""

from __future__ import annotations

_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN",
          "path": "PATH", "file": "FILE", "dir": "DIRECTORY", "range": "RANGE",
          "datetime": "DATETIME", "uuid": "UUID"}


def classic(label: str | None) -> str | None:
    """``<int range>`` -> ``INTEGER RANGE``, ``<local|docker>`` -> ``[local|docker]``,
    ``<list[str]>`` -> ``TEXT``; anything not in angle brackets is returned as it is."""
    if not label:
        return label
    more = "..." if label.endswith("...") else ""
    core = label.removesuffix("...")
    if not (core.startswith("<") and core.endswith(">")):
        return label
    inner = core[1:-1]
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[5:-1]
    if "|" in inner:
        return f"[{inner}]{more}"
    return " ".join(_NAMES.get(word, word.upper()) for word in inner.split()) + more


def usage_name(argument) -> str:
    """An argument in the usage line: ``JOB``, ``[FOLDER]``, ``[PATHS]...``, ``JOB...``."""
    name = argument.metavar or argument.name.upper()
    if not argument.required:
        name = f"[{name}]"
    if argument.nargs != 1 and not name.endswith("..."):
        name += "..."
    return name


def install() -> None:
    """Switch Typer's parameter types and usage names to the classic style (idempotent)."""
    try:
        from typer import core
    except ImportError:  # pragma: no cover - typer is a dependency
        return
    argument = getattr(core, "TyperArgument", None)
    option = getattr(core, "TyperOption", None)
    if (argument is None or option is None
            or getattr(option, "_cvtrain_classic", False)
            or not all(callable(getattr(cls, "display_type_rich", None))
                       for cls in (argument, option))
            or not callable(getattr(argument, "_usage_display_name", None))):
        return
    option_type, argument_type = option.display_type_rich, argument.display_type_rich

    def option_display(self, ctx):
        if getattr(self, "is_flag", False):
            return None
        return classic(option_type(self, ctx))

    def argument_display(self, ctx):
        return classic(argument_type(self, ctx))

    option.display_type_rich = option_display
    argument.display_type_rich = argument_display
    argument._usage_display_name = usage_name
    option._cvtrain_classic = True
