"""PNG plot of the training curves from ``metrics.jsonl``.

One panel per quantity: the training loss (with the validation loss when there is
one), the learning rate, and every other validation metric.

Example:
    >>> import tempfile, pathlib, json
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"step": s, "split": "train", "loss": 1 / s, "lr": 1e-3} for s in range(1, 5)]
    >>> _ = (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> plot_curves(folder / "metrics.jsonl", folder / "curves.png").name
    'curves.png'
"""

from __future__ import annotations

import os
from pathlib import Path

from speechssl.safe_io import atomic_write
from speechssl.train.progress import read_metrics

__all__ = ["plot_curves"]


def _series(rows: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    pairs = [(row["step"], row[key]) for row in rows if row.get("split") == split and key in row]
    return [step for step, _ in pairs], [value for _, value in pairs]


def plot_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Draw the curves of ``metrics_path`` into ``png_path``; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    valid_keys = sorted(
        {
            key
            for row in rows
            if row.get("split") == "valid"
            for key in row
            if key not in ("step", "split")
        }
        - {"loss"}
    )
    panels = ["loss", "lr", *valid_keys]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, key in zip(axes[0], panels):
        for split in ("train", "valid"):
            steps, values = _series(rows, split, key)
            if steps:
                axis.plot(steps, values, label=split, marker="." if split == "valid" else None)
        axis.set_xlabel("step")
        axis.set_title(key)
        if key == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if key == "loss" and any(row.get("split") == "valid" for row in rows):
            axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    png_path = Path(png_path)
    try:
        # atomic: a full disk leaves the old plot (or none) and says "disk full at <path>"
        with atomic_write(png_path, "wb") as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close(figure)
    return png_path
