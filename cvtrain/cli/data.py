"""``cvtrain data``: make datasets (synthetic ones in the official formats), push and pull
files and folders between local paths and ``s3://bucket/prefix``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from cvtrain.storage.s3 import WORKERS  # light: boto3 is imported only when used

app = typer.Typer(help="Datasets: synthesise data in the official on-disk formats; push and "
                       "pull files and folders to and from s3://bucket/prefix.",
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


class BirdsLayout(StrEnum):
    v2010 = "2010"
    v2011 = "2011"


@synth_app.command("cub200")
def synth_cub200(
    dest: Path = typer.Argument(..., help="Folder to write the dataset into."),
    classes: int = typer.Option(5, "--classes", min=1, max=100),
    per_class: int = typer.Option(8, "--per-class", min=2,
                                  help="Images per class; half (rounded down) are test images."),
    image_size: int = typer.Option(64, "--image-size", min=8, max=1024),
    layout: BirdsLayout = typer.Option(BirdsLayout.v2010, "--layout",
                                       help="2010: images/ + lists/; 2011: CUB_200_2011/"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a small learnable Caltech-UCSD Birds dataset of real JPEG files."""
    from cvtrain.data.birds import write_synthetic_cub200

    print(write_synthetic_cub200(dest, classes=classes, per_class=per_class,
                                 image_size=image_size, layout=layout.value, seed=seed))


ENDPOINT_HELP = ("S3-compatible endpoint \\[default: boto3's configuration, e.g. "
                 "$AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL].")


def _transfer(src: str, dst: str, endpoint_url: str | None, workers: int, quiet: bool,
              direction: str) -> None:
    import sys

    from cvtrain import storage

    fn = storage.push if direction == "push" else storage.pull
    stats = fn(src, dst, endpoint_url=endpoint_url, workers=workers,
               progress=not quiet and sys.stderr.isatty())
    if not quiet:
        print(f"{direction} {src} -> {stats.destination}: {stats.summary()}")


@app.command("push")
def push(
    src: str = typer.Argument(..., help="Local file or folder."),
    uri: str = typer.Argument(..., help="s3://bucket/key-or-prefix (or a local path). A folder "
                                        "lands under the prefix; a file at the key, or inside "
                                        "the prefix when the URI ends with '/'."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
    workers: int = typer.Option(WORKERS, "--workers", min=1, max=128,
                                help="Files transferred at once."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no summary."),
) -> None:
    """Upload SRC to URI, skipping files whose size and checksum already match."""
    _transfer(src, uri, endpoint_url, workers, quiet, "push")


@app.command("pull")
def pull(
    uri: str = typer.Argument(..., help="s3://bucket/key-or-prefix (or a local path)."),
    dest: str = typer.Argument(..., help="Local folder (or file, for a single key)."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
    workers: int = typer.Option(WORKERS, "--workers", min=1, max=128,
                                help="Files transferred at once."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no summary."),
) -> None:
    """Download URI to DEST, skipping files whose size and checksum already match."""
    _transfer(uri, dest, endpoint_url, workers, quiet, "pull")
