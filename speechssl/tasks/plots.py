"""Result plots written as PNG files (matplotlib, Agg backend: no display needed).

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cm.png")
    >>> plot_confusion_matrix(np.array([[5, 1], [2, 7]]), ["neu", "hap"], path) == path
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: tests, servers and CI have no display

# pyplot is imported only now: the backend must be chosen before pyplot loads
import matplotlib.pyplot as plt
import numpy as np
import torch

from speechssl.safe_io import atomic_write

__all__ = ["plot_confusion_matrix", "plot_layer_weights", "plot_tsne"]


def _to_numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy()
    return np.asarray(values)


def save_figure(figure: plt.Figure, path: str | Path) -> str:
    """Write ``figure`` as a PNG (parent folders created), close it, return the path."""
    path = Path(path)
    try:
        # atomic: a full disk leaves the old plot (or none) and says "disk full at <path>"
        with atomic_write(path, "wb") as file:
            figure.savefig(file, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
    return str(path)


def plot_confusion_matrix(
    cm, labels: Sequence[str], path: str | Path, normalize: bool = True, title: str = ""
) -> str:
    """Heat map of a confusion matrix (rows = true class); returns ``path``.

    With ``normalize=True`` each row is divided by its total (so the diagonal shows per-class
    recall) and the cells show percentages with the raw counts beneath.
    """
    counts = _to_numpy(cm).astype(np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(labels):
        raise ValueError(f"cm must be ({len(labels)}, {len(labels)}), got {counts.shape}")
    support = counts.sum(axis=1, keepdims=True)
    values = counts / np.maximum(support, 1) if normalize else counts.astype(np.float64)
    size = max(3.5, 0.9 * len(labels) + 1.5)
    figure, axes = plt.subplots(figsize=(size + 0.8, size))
    image = axes.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    threshold = (values.max() if values.size else 0.0) / 2
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            if normalize:
                text = f"{100 * values[row, column]:.1f}%\n({counts[row, column]})"
            else:
                text = str(counts[row, column])
            color = "white" if values[row, column] > threshold else "black"
            axes.text(column, row, text, ha="center", va="center", color=color, fontsize=9)
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels=list(labels), rotation=45 if len(labels) > 6 else 0)
    axes.set_yticks(ticks, labels=list(labels))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(
        title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix")
    )
    return save_figure(figure, path)


def plot_tsne(
    embeddings, speakers: Sequence, path: str | Path, title: str = "", seed: int = 0
) -> str:
    """2-D t-SNE of ``embeddings (N, E)`` coloured by speaker; returns ``path``.

    Perplexity is sklearn's default 30 capped at ``(N - 1) / 3`` so small sets (a demo corpus,
    a few dozen utterances) still embed; at most 20 speakers get a legend entry.
    """
    from sklearn.manifold import TSNE  # imported here: slow to import, needed only here

    points = _to_numpy(embeddings).astype(np.float64)
    speakers = [str(speaker) for speaker in speakers]
    if points.ndim != 2 or points.shape[0] != len(speakers):
        raise ValueError(f"embeddings must be (N={len(speakers)}, E), got {points.shape}")
    if points.shape[0] < 4:
        raise ValueError(f"t-SNE needs at least 4 embeddings, got {points.shape[0]}")
    perplexity = min(30.0, (points.shape[0] - 1) / 3)
    projected = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed
    ).fit_transform(points)
    distinct = sorted(set(speakers))
    colours = plt.get_cmap("tab20" if len(distinct) > 10 else "tab10")
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    for index, speaker in enumerate(distinct):
        rows = [i for i, name in enumerate(speakers) if name == speaker]
        axes.scatter(
            projected[rows, 0],
            projected[rows, 1],
            s=40 if len(points) < 100 else 14,  # small sets: bigger dots
            color=colours(index % colours.N),
            label=speaker if index < 20 else None,
            alpha=0.85,
            edgecolors="none",
        )
    axes.legend(title="speaker", fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title or f"t-SNE of {points.shape[0]} embeddings, {len(distinct)} speakers")
    return save_figure(figure, path)


def plot_probe_layers(accuracy, path: str | Path, title: str = "probe accuracy per layer") -> str:
    """Dev accuracy (%) of the linear probe on each hidden state (the last bar: the layer
    average, when the probe tried it); returns ``path``."""
    values = 100 * _to_numpy(accuracy).astype(np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no probe accuracies to plot")
    figure, axes = plt.subplots(figsize=(max(4.0, 0.45 * values.size + 1.5), 3.2))
    layers = np.arange(values.size)
    axes.bar(layers, values, color="tab:green")
    axes.set_xticks(layers)
    axes.set_xlabel("hidden state (0 = input to the first layer)")
    axes.set_ylabel("dev accuracy (%)")
    axes.set_title(title)
    return save_figure(figure, path)


def plot_probe_over_steps(rows, path: str | Path, title: str = "probe over steps") -> str:
    """Probe dev accuracy (%) per hidden state against the pre-training step (one line per
    layer, darker = deeper) beside the test metric with its 95 % CI band; returns ``path``.

    ``rows``: dicts with ``step``, ``metric``, ``mean``, ``ci95`` and
    ``dev_accuracy_per_layer`` (fractions; may be empty), as ``speechssl probe-steps`` writes.
    """
    if not rows:
        raise ValueError("no steps to plot")
    steps = np.array([row["step"] for row in rows], dtype=np.float64)
    figure, (layers_axes, metric_axes) = plt.subplots(1, 2, figsize=(10.0, 3.6))
    per_layer = [row["dev_accuracy_per_layer"] for row in rows]
    num_layers = min(len(values) for values in per_layer)
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(num_layers, 1)))
    for layer in range(num_layers):
        values = [100 * row[layer] for row in per_layer]
        layers_axes.plot(steps, values, marker="o", color=colours[layer], label=f"layer {layer}")
    layers_axes.set_xlabel("pre-training step (0 = random init)")
    layers_axes.set_ylabel("probe dev accuracy (%)")
    layers_axes.set_title("per hidden state" if num_layers else "no probe (cosine scoring)")
    if num_layers:
        layers_axes.legend(fontsize=7, ncol=2)
    means = np.array([row["mean"] for row in rows])
    intervals = np.array([row["ci95"] for row in rows], dtype=np.float64)
    metric_axes.plot(steps, means, marker="o", color="black")
    metric_axes.fill_between(steps, intervals[:, 0], intervals[:, 1], color="grey", alpha=0.3)
    metric_axes.set_xlabel("pre-training step (0 = random init)")
    metric_axes.set_ylabel(f"test {rows[0]['metric']} (%), 95 % CI")
    metric_axes.set_title("test metric")
    figure.suptitle(title)
    return save_figure(figure, path)


def plot_layer_weights(weights, path: str | Path, title: str = "layer weights") -> str:
    """Bar chart of weighted-layer-sum weights, layer 0 = the encoder's input; returns ``path``."""
    values = _to_numpy(weights).astype(np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no layer weights to plot")
    figure, axes = plt.subplots(figsize=(max(4.0, 0.45 * values.size + 1.5), 3.2))
    layers = np.arange(values.size)
    axes.bar(layers, values, color="tab:blue")
    axes.axhline(1.0 / values.size, color="grey", linestyle="--", linewidth=1, label="uniform")
    axes.set_xticks(layers)
    axes.set_xlabel("layer (0 = input to the first layer)")
    axes.set_ylabel("weight")
    axes.set_title(title)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def plot_metric_bars(
    values: dict[str, tuple[float, float]], path: str | Path, ylabel: str, title: str = ""
) -> str:
    """Bar chart of ``{name: (mean, std)}`` with error bars (e.g. WA per transfer mode)."""
    if not values:
        raise ValueError("no values to plot")
    names = list(values)
    means = np.array([values[name][0] for name in names], dtype=np.float64)
    stds = np.array([values[name][1] for name in names], dtype=np.float64)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.4))
    positions = np.arange(len(names))
    axes.bar(positions, means, yerr=stds, capsize=4, color="tab:blue")
    for position, mean in zip(positions, means):
        axes.text(position, mean, f"{mean:.1f}", ha="center", va="bottom", fontsize=8)
    axes.set_xticks(positions)
    axes.set_xticklabels(names, rotation=20, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    return save_figure(figure, path)
