"""Uncertainty of results: means with 95 % confidence intervals and paired bootstrap deltas.

Every table cell this toolkit prints is a mean over seeds with a 95 % CI, and every
comparison between two upstreams is a paired bootstrap over the *same* test items (the
downstream tables, the TTS study). The two resampling levels are:

* **items** (test utterances, verification trials, held-out sentences): the finite test
  set is the dominant source of uncertainty on small corpora;
* **seeds** (head seeds, random-init seeds, pre-training seeds): resampled too, so a
  cell's interval also covers run-to-run variation.

A cell is :func:`bootstrap_metric`: resample seeds and items with replacement, recompute
the metric (averaged over the resampled seeds), take the 2.5/97.5 percentiles. A delta is
:func:`paired_bootstrap_delta`: the same resampled items for both arms, seeds resampled
per arm, so identical predictions give exactly 0 with a zero-width interval.

Written by hand (no SciPy bootstrap) because the metrics are not means of per-item scores
(UA is a mean of per-class recalls, EER a threshold search), and both arms must share
the resampled items.

Example:
    >>> import numpy as np
    >>> y_true = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    >>> a = [np.array([0, 1, 0, 1, 0, 1, 0, 0])]           # one seed, 7/8 correct
    >>> cell = bootstrap_metric(accuracy, y_true, a, num_resamples=200)
    >>> cell.mean, cell.low <= cell.mean <= cell.high
    (0.875, True)
    >>> delta = paired_bootstrap_delta(accuracy, y_true, a, a, num_resamples=200)
    >>> delta.delta, delta.low, delta.high
    (0.0, 0.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "Delta",
    "Estimate",
    "accuracy",
    "bootstrap_metric",
    "excludes_zero",
    "format_estimate",
    "mean_ci",
    "paired_bootstrap_delta",
    "unpaired_bootstrap_difference",
]

Metric = Callable[[np.ndarray, np.ndarray], float]


class Estimate(NamedTuple):
    """A point estimate with its 95 % interval and how many seeds went into it."""

    mean: float
    low: float
    high: float
    num_seeds: int

    def as_dict(self, scale: float = 1.0) -> dict:
        """JSON-able ``{"mean", "ci95": [lo, hi], "n_seeds"}`` (values times ``scale``)."""
        return {
            "mean": scale * self.mean,
            "ci95": [scale * self.low, scale * self.high],
            "n_seeds": self.num_seeds,
        }


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal entries (top-1 accuracy, WA)."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def _check_arm(y_true: np.ndarray, predictions: Sequence[np.ndarray], name: str) -> np.ndarray:
    if len(predictions) == 0:
        raise ValueError(f"{name}: no seed's predictions")
    stacked = np.stack([np.asarray(p) for p in predictions])  # (S, N, ...)
    if stacked.shape[1] != len(y_true):
        raise ValueError(
            f"{name}: predictions cover {stacked.shape[1]} items but there are {len(y_true)}"
        )
    return stacked


def _mean_over_seeds(metric: Metric, y_true, stacked, seeds, items) -> float:
    truth = y_true[items]
    return float(np.mean([metric(truth, stacked[seed][items]) for seed in seeds]))


def bootstrap_metric(
    metric: Metric,
    y_true: np.ndarray,
    predictions: Sequence[np.ndarray],
    *,
    num_resamples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Mean of ``metric`` over seeds and its 95 % percentile-bootstrap interval.

    Args:
        metric: ``metric(y_true (n,), y_pred (n, ...)) -> float`` (accuracy, UA, EER...).
        y_true: ``(N,)`` the items' truth (class indices, trial labels).
        predictions: one ``(N, ...)`` array per seed (class indices, scores).
        num_resamples: bootstrap resamples.
        seed: seed of the resampling (the interval is reproducible).
    """
    y_true = np.asarray(y_true)
    stacked = _check_arm(y_true, predictions, "predictions")
    num_seeds, num_items = stacked.shape[0], len(y_true)
    all_items = np.arange(num_items)
    mean = _mean_over_seeds(metric, y_true, stacked, range(num_seeds), all_items)
    generator = np.random.default_rng(seed)
    values = np.empty(num_resamples)
    for index in range(num_resamples):
        seeds = generator.integers(0, num_seeds, num_seeds)
        items = generator.integers(0, num_items, num_items)
        values[index] = _mean_over_seeds(metric, y_true, stacked, seeds, items)
    low, high = np.nanpercentile(values, [2.5, 97.5])  # NaN: a degenerate resample
    return Estimate(mean, float(min(low, mean)), float(max(high, mean)), num_seeds)


class Delta(NamedTuple):
    """``metric(a) - metric(b)`` on the same items, with its 95 % paired-bootstrap interval."""

    delta: float
    low: float
    high: float

    def as_dict(self, scale: float = 1.0) -> dict:
        return {"delta": scale * self.delta, "ci95": [scale * self.low, scale * self.high]}


def paired_bootstrap_delta(
    metric: Metric,
    y_true: np.ndarray,
    predictions_a: Sequence[np.ndarray],
    predictions_b: Sequence[np.ndarray],
    *,
    num_resamples: int = 1000,
    seed: int = 0,
) -> Delta:
    """``metric(a) - metric(b)`` (each averaged over its seeds) with a paired 95 % CI.

    Each resample draws one set of items shared by both arms (the pairing) and, per arm,
    its seeds with replacement. Identical arms give exactly 0 and ``[0, 0]``.
    """
    y_true = np.asarray(y_true)
    stacked_a = _check_arm(y_true, predictions_a, "arm a")
    stacked_b = _check_arm(y_true, predictions_b, "arm b")
    seeds_a, seeds_b, num_items = stacked_a.shape[0], stacked_b.shape[0], len(y_true)
    all_items = np.arange(num_items)
    delta = _mean_over_seeds(metric, y_true, stacked_a, range(seeds_a), all_items) - (
        _mean_over_seeds(metric, y_true, stacked_b, range(seeds_b), all_items)
    )
    generator = np.random.default_rng(seed)
    values = np.empty(num_resamples)
    for index in range(num_resamples):
        items = generator.integers(0, num_items, num_items)
        chosen_a = generator.integers(0, seeds_a, seeds_a)
        chosen_b = generator.integers(0, seeds_b, seeds_b)
        values[index] = _mean_over_seeds(metric, y_true, stacked_a, chosen_a, items) - (
            _mean_over_seeds(metric, y_true, stacked_b, chosen_b, items)
        )
    low, high = np.nanpercentile(values, [2.5, 97.5])  # NaN: a degenerate resample
    return Delta(float(delta), float(min(low, delta)), float(max(high, delta)))


def unpaired_bootstrap_difference(
    values_a: Sequence[float],
    values_b: Sequence[float],
    *,
    num_resamples: int = 1000,
    seed: int = 0,
) -> Delta:
    """``mean(a) - mean(b)`` of two *independent* samples (different items, e.g. the
    per-sentence deltas of two text bins) with a 95 % percentile-bootstrap interval: each
    sample is resampled on its own. Equal samples give 0 (the interval is not zero-width).

    Example:
        >>> difference = unpaired_bootstrap_difference([3.0, 4.0, 5.0], [1.0, 2.0, 3.0])
        >>> difference.delta, difference.low > 0
        (2.0, True)
    """
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("unpaired_bootstrap_difference needs items in both samples")
    delta = float(a.mean() - b.mean())
    generator = np.random.default_rng(seed)
    # (R, n) resampled item indices per sample -> (R,) differences of the resampled means
    resampled_a = a[generator.integers(0, a.size, (num_resamples, a.size))].mean(axis=1)
    resampled_b = b[generator.integers(0, b.size, (num_resamples, b.size))].mean(axis=1)
    low, high = np.percentile(resampled_a - resampled_b, [2.5, 97.5])
    return Delta(delta, float(min(low, delta)), float(max(high, delta)))


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean and Student-t 95 % interval of independent values (e.g. one metric per seed).

    One value gives a zero-width interval: say ``n_seeds`` next to it.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values")
    mean = float(values.mean())
    if values.size == 1:
        return Estimate(mean, mean, mean, 1)
    half = float(
        scipy_stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    )
    return Estimate(mean, mean - half, mean + half, int(values.size))


def excludes_zero(delta: Delta) -> bool:
    """True when the interval lies entirely on one side of 0 (a claimable difference)."""
    return delta.low > 0 or delta.high < 0


def format_estimate(value: Estimate | Delta, scale: float = 100.0, digits: int = 1) -> str:
    """``"mean [lo, hi]"`` for tables, e.g. ``"61.3 [57.0, 65.2]"``."""
    center = value.mean if isinstance(value, Estimate) else value.delta
    sign = "+" if isinstance(value, Delta) and center > 0 else ""
    return (
        f"{sign}{scale * center:.{digits}f} [{scale * value.low:.{digits}f}, "
        f"{scale * value.high:.{digits}f}]"
    )
