"""Learning curves as PNG files (matplotlib, imported when a plot is drawn): a run's own
``curves.png`` and ``cvtrain results compare --plot``'s overlay of several runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvtrain.runs import RunFolder


def plot_curves(rows: list[dict], dest: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training vs validation, as the report plots them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[key] for r in rows], marker=".", label="training")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], marker=".", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)


def plot_overlay(refs: list[RunFolder], histories: list[list[dict]], dest: Path) -> None:
    """Loss and accuracy of every run in one figure: training dashed, validation solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, (ref, rows) in enumerate(zip(refs, histories, strict=True)):
        color = colors[i % len(colors)]
        epochs = [r.get("epoch") for r in rows]
        for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
            ax.plot(epochs, [r.get(key) for r in rows], linestyle="--", color=color,
                    marker="x", markersize=4, label=f"{ref.label} training")
            ax.plot(epochs, [r.get(f"val_{key}") for r in rows], linestyle="-", color=color,
                    marker=".", label=f"{ref.label} validation")
    for ax, label in ((axes[0], "loss"), (axes[1], "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("training dashed, validation solid")
    fig.tight_layout()
    dest = Path(dest)
    if dest.parent and not dest.parent.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=100)
    plt.close(fig)
