"""``cvtrain data``: make datasets (synthetic ones in the official formats)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

app = typer.Typer(help="Datasets: synthesise data in the official on-disk formats.",
                  no_args_is_help=True)
synth_app = typer.Typer(help="Write a small synthetic dataset in an official on-disk format.",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")


class CifarFormat(StrEnum):
    binary = "binary"
    python = "python"


@synth_app.command("cifar100")
def synth_cifar100(
    dest: Path = typer.Argument(..., help="Folder to write the archive into."),
    classes: int = typer.Option(25, "--classes", min=1, max=100, help="Fine classes 0..N-1."),
    train_per_class: int = typer.Option(500, "--train-per-class", min=1),
    test_per_class: int = typer.Option(100, "--test-per-class", min=1),
    fmt: CifarFormat = typer.Option(CifarFormat.binary, "--format",
                                    help="binary: cifar-100-binary.tar.gz; "
                                         "python: cifar-100-python.tar.gz"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a learnable synthetic CIFAR-100 archive (same format the real loader reads)."""
    from cvtrain.data.cifar import write_synthetic_cifar100

    path = write_synthetic_cifar100(dest, classes=classes, train_per_class=train_per_class,
                                    test_per_class=test_per_class, fmt=fmt.value, seed=seed)
    print(path)
