"""PNG plot of the training curves from ``metrics.jsonl``.

One panel per quantity: the loss, the learning rate, then every metric the model logs
(training and validation series in one panel). A metric ``<name>_baseline`` (see
:mod:`speechssl.objectives.signals`: copy-last-frame L1, majority-label accuracy,
contrastive chance) is drawn dashed in ``<name>``'s panel, and those panels come first, so
the plot shows at a glance whether the model beats its trivial baseline.

Example:
    >>> import tempfile, pathlib, json
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"step": s, "split": "train", "loss": 1 / s, "lr": 1e-3} for s in range(1, 5)]
    >>> _ = (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> plot_curves(folder / "metrics.jsonl", folder / "curves.png").name
    'curves.png'
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from speechssl.objectives.signals import BASELINE_SUFFIX
from speechssl.safe_io import atomic_write
from speechssl.train.progress import read_metrics

__all__ = ["panel_names", "plot_curves"]

# what the Trainer adds to each row besides the model's metrics (not drawn)
_BOOKKEEPING = {
    "step",
    "split",
    "epoch",
    "grad_norm",
    "utterances_per_s",
    "audio_s_per_s",
    "nonfinite_steps",
    "skipped_utterances",
}
_COLUMNS = 4  # panels per row of the figure


def _series(rows: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    pairs = [(row["step"], row[key]) for row in rows if row.get("split") == split and key in row]
    return [step for step, _ in pairs], [value for _, value in pairs]


def panel_names(rows: list[dict]) -> list[str]:
    """The panels of ``rows``: loss, lr, metrics with a baseline, then the other metrics.

    Example:
        >>> panel_names([{"step": 1, "split": "train", "loss": 1.0, "lr": 0.1, "b": 0,
        ...               "a": 0, "a_baseline": 1, "grad_norm": 2.0}])
        ['loss', 'lr', 'a', 'b']
    """
    keys = {key for row in rows for key in row} - _BOOKKEEPING - {"loss", "lr"}
    metrics = sorted(key for key in keys if not key.endswith(BASELINE_SUFFIX))
    with_baseline = [key for key in metrics if key + BASELINE_SUFFIX in keys]
    others = [key for key in metrics if key + BASELINE_SUFFIX not in keys]
    # a baseline whose metric was never logged still gets its own panel
    orphans = sorted(
        key
        for key in keys
        if key.endswith(BASELINE_SUFFIX) and key[: -len(BASELINE_SUFFIX)] not in keys
    )
    return ["loss", "lr", *with_baseline, *others, *orphans]


def plot_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Draw the curves of ``metrics_path`` into ``png_path``; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    panels = panel_names(rows)
    columns = min(_COLUMNS, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.5 * lines), squeeze=False)
    colors = {"train": "tab:blue", "valid": "tab:orange"}
    for axis, key in zip(axes.flat, panels):
        for split in ("train", "valid"):
            steps, values = _series(rows, split, key)
            if steps:
                marker = "." if split == "valid" else None
                axis.plot(steps, values, label=split, marker=marker, color=colors[split])
            steps, values = _series(rows, split, key + BASELINE_SUFFIX)
            if steps:
                axis.plot(
                    steps,
                    values,
                    label=f"{split} baseline",
                    linestyle="--",
                    marker="x" if split == "valid" else None,  # one evaluation: a point
                    color=colors[split],
                )
        axis.set_xlabel("step")
        axis.set_title(key)
        if key == "lr":
            axis.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if len(axis.get_lines()) > 1:
            axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)  # the grid's unused cells
    figure.tight_layout()
    png_path = Path(png_path)
    try:
        # atomic: a full disk leaves the old plot (or none) and says "disk full at <path>"
        with atomic_write(png_path, "wb") as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close(figure)
    return png_path
