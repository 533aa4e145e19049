"""Plots of the TTS study: each metric against the pre-training fraction, and alignments.

Example:
    >>> import os, tempfile
    >>> rows = [{"fraction": f, "bin": b, "mcd_dtw_db": 10 - 4 * f + (b == "low")}
    ...         for f in (0, 0.125, 0.25, 0.5, 1) for b in ("low", "high")]
    >>> folder = tempfile.mkdtemp()
    >>> path = plot_metric_vs_fraction(rows, "mcd_dtw_db", os.path.join(folder, "mcd.png"))
    >>> os.path.isfile(path)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: tests, servers and CI have no display

import matplotlib.pyplot as plt  # imported after the backend is chosen
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from speechssl.tasks.plots import save_figure

__all__ = [
    "DEV_CRITERIA",
    "METRIC_LABELS",
    "plot_alignment",
    "plot_alignments",
    "plot_dev_curves",
    "plot_metric_vs_fraction",
]

METRIC_LABELS = {
    "mcd_dtw_db": "MCD-DTW (dB, lower is better)",
    "mcd_dtw_sl_db": "MCD-DTW-SL (dB, lower is better)",
    "log_f0_rmse_cents": "log-F0 RMSE (cents, lower is better)",
    "voicing_decision_error": "voicing decision error (lower is better)",
    "attention_focus_rate": "attention focus rate (higher is better)",
    "attention_diagonality": "attention diagonality (higher is better)",
    "stop_length_error": "relative stop-length error (lower is better)",
}


# the fine-tuning dev criteria (metrics.jsonl keys of the dev evaluations) and their labels
DEV_CRITERIA = {
    "loss": "teacher-forced dev loss",
    "free_mcd_dtw_sl_db": "free-running dev MCD-DTW-SL (dB)",
    "free_stop_length_error": "free-running dev stop-length error",
    "free_stopped": "free-running dev share stopped",
}


def _fraction_label(fraction: float) -> str:
    if fraction == 0:
        return "0"
    if fraction == 1:
        return "1"
    denominator = round(1 / fraction)
    return f"1/{denominator}" if abs(1 / denominator - fraction) < 1e-9 else f"{fraction:g}"


def plot_metric_vs_fraction(
    rows: Sequence[Mapping],
    metric: str,
    path: str | Path,
    bin_order: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """One line per text-similarity bin: ``metric`` against the pre-training fraction.

    Args:
        rows: either per-sentence dicts with ``fraction``, ``bin`` and the metric (several
            rows per cell are averaged, NaN skipped), or the study's table rows
            ``{"fraction", "bin", "metric", "mean", "ci95": [lo, hi]}`` (those of ``metric``
            are drawn, their 95 % CI as a shaded band).
        bin_order: legend order (default: the order bins first appear).

    The x axis is categorical (0, 1/8, 1/4, 1/2, 1 are evenly spaced).
    """
    # (bin, fraction) -> (mean, low, high)
    cells: dict[tuple[str, float], tuple[float, float, float]] = {}
    if rows and all("ci95" in row and "metric" in row for row in rows):
        for row in rows:
            if row["metric"] == metric:
                low, high = row["ci95"]
                cells[str(row["bin"]), float(row["fraction"])] = (row["mean"], low, high)
    else:
        values: dict[tuple[str, float], list[float]] = {}
        for row in rows:
            if metric not in row:
                raise ValueError(f"row {dict(row)} has no {metric!r}")
            key = (str(row["bin"]), float(row["fraction"]))
            values.setdefault(key, []).append(float(row[metric]))
        for key, numbers in values.items():
            finite = np.asarray(numbers, dtype=float)
            finite = finite[np.isfinite(finite)]
            mean = finite.mean() if finite.size else np.nan
            cells[key] = (mean, mean, mean)
    if not cells:
        raise ValueError("no rows to plot")
    fractions = sorted({fraction for _, fraction in cells})
    bins = list(bin_order) if bin_order is not None else list(dict.fromkeys(b for b, _ in cells))
    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    positions = np.arange(len(fractions))
    for name in bins:
        # (3, fractions): mean, low, high; NaN where the bin lacks the fraction
        mean, low, high = np.array(
            [cells.get((name, fraction), (np.nan,) * 3) for fraction in fractions], dtype=float
        ).T
        (line,) = axes.plot(positions, mean, marker="o", label=name)
        if np.nanmax(high - low, initial=0.0) > 0:
            axes.fill_between(positions, low, high, color=line.get_color(), alpha=0.18)
    axes.set_xticks(positions, [_fraction_label(fraction) for fraction in fractions])
    axes.set_xlabel("pre-training data fraction")
    axes.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes.set_title(title or METRIC_LABELS.get(metric, metric).split(" (")[0])
    axes.grid(alpha=0.3)
    axes.legend(title="text bin (band: 95 % CI)")
    return save_figure(figure, path)


def plot_alignment(
    alignment,
    path: str | Path,
    title: str = "",
    num_steps: int | None = None,
    num_tokens: int | None = None,
    text: str | None = None,
) -> str:
    """``imshow`` of one ``(decoder steps, characters)`` attention matrix, steps on the x axis."""
    array = (
        alignment.detach().float().cpu().numpy()
        if isinstance(alignment, torch.Tensor)
        else np.asarray(alignment, dtype=float)
    )
    if array.ndim != 2:
        raise ValueError(f"alignment must be (decoder steps, characters), got {array.shape}")
    array = array[: num_steps or array.shape[0], : num_tokens or array.shape[1]]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    # (S, L) -> (L, S): characters up the y axis, time along x, origin at the bottom left
    image = axes.imshow(array.T, aspect="auto", origin="lower", interpolation="none", vmin=0)
    figure.colorbar(image, ax=axes, fraction=0.05)
    axes.set_xlabel("decoder step")
    axes.set_ylabel("character")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title if text is None else f"{title}\n{text}"[:120], fontsize=9)
    return save_figure(figure, path)


def plot_alignments(
    alignments: Sequence,
    titles: Sequence[str],
    path: str | Path,
    columns: int = 2,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> str:
    """Several alignments in one grid image (e.g. one sentence under each fraction).

    ``sizes`` gives each alignment's valid ``(decoder steps, characters)`` to crop padding.
    """
    if len(alignments) == 0 or len(alignments) != len(titles):
        raise ValueError("need as many titles as alignments, and at least one")
    if sizes is not None and len(sizes) != len(alignments):
        raise ValueError("need one (steps, characters) size per alignment")
    rows = (len(alignments) + columns - 1) // columns
    figure, axes_grid = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 3 * rows), squeeze=False
    )
    for index, (axes, alignment, title) in enumerate(
        zip(axes_grid.flat, alignments, titles, strict=False)
    ):
        array = (
            alignment.detach().float().cpu().numpy()
            if isinstance(alignment, torch.Tensor)
            else np.asarray(alignment, dtype=float)
        )
        if sizes is not None:
            array = array[: sizes[index][0], : sizes[index][1]]
        # (S, L) -> (L, S): characters up the y axis
        axes.imshow(array.T, aspect="auto", origin="lower", interpolation="none", vmin=0)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("decoder step")
        axes.set_ylabel("character")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in list(axes_grid.flat)[len(alignments) :]:
        axes.axis("off")
    figure.tight_layout()
    return save_figure(figure, path)


def plot_dev_curves(
    curves: Mapping[float, Sequence[Mapping]],
    path: str | Path,
    selected: str = "loss",
    best_steps: Mapping[float, int] | None = None,
) -> str:
    """Fine-tuning dev criteria against the step: one panel per criterion of
    :data:`DEV_CRITERIA` present, one line per pre-training fraction.

    Args:
        curves: ``{fraction: [{"step", "loss", "free_mcd_dtw_sl_db", ...}, ...]}``, the
            dev evaluations (:func:`speechssl.tts.study.dev_curve`).
        selected: the criterion early stopping used; its panel is titled "(selected)".
        best_steps: ``{fraction: step}`` of the kept weights, drawn as a ring on every panel.

    Example:
        >>> import os, tempfile
        >>> curve = [{"step": s, "loss": 1 / s, "free_mcd_dtw_sl_db": 9 - s} for s in (1, 2)]
        >>> path = os.path.join(tempfile.mkdtemp(), "dev.png")
        >>> os.path.isfile(plot_dev_curves({0.0: curve}, path, "free_mcd_dtw_sl_db"))
        True
    """
    keys = [
        key for key in DEV_CRITERIA if any(key in row for rows in curves.values() for row in rows)
    ]
    if not keys:
        raise ValueError("no dev evaluations to plot")
    figure, axes_row = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for axes, key in zip(axes_row[0], keys, strict=True):
        for fraction in sorted(curves):
            points = [(row["step"], row[key]) for row in curves[fraction] if key in row]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            (line,) = axes.plot(steps, values, marker=".", label=_fraction_label(fraction))
            best = (best_steps or {}).get(fraction)
            if best in steps:
                value = values[steps.index(best)]
                axes.plot(
                    [best], [value], "o", markersize=9, fillstyle="none", color=line.get_color()
                )
        title = DEV_CRITERIA[key] + (" (selected)" if key == selected else "")
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("fine-tuning step")
        axes.grid(alpha=0.3)
    axes_row[0][0].legend(title="fraction (ring: kept)", fontsize="small")
    figure.tight_layout()
    return save_figure(figure, path)
