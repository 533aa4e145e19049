"""Downstream metrics: WA / UA / confusion for classification, EER / minDCF for verification.

* **WA** (weighted accuracy) is the overall accuracy: correct / total, so large classes weigh
  more. **UA** (unweighted accuracy) is the mean of the per-class recalls, so each class
  weighs the same (the IEMOCAP convention; equal to sklearn's ``balanced_accuracy_score``).
  Classes absent from ``y_true`` have no recall and are left out of UA's mean (a fold
  without any "sad" utterance is scored on the classes it has); predicting such a class is
  still an error for the true class.
* EER and minDCF follow SpeechBrain's ``speechbrain.utils.metric_stats.EER`` / ``minDCF``
  exactly (same thresholds, tested for equality) but scale to VoxCeleb-sized trial lists.

Example:
    >>> y_true, y_pred = [0, 0, 0, 1], [0, 0, 1, 1]
    >>> weighted_accuracy(y_true, y_pred), unweighted_accuracy(y_true, y_pred)
    (0.75, 0.8333333333333333)
    >>> confusion_matrix(y_true, y_pred, num_classes=2).tolist()
    [[2, 1], [0, 1]]
    >>> mean_std([0.5, 0.75])
    (0.625, 0.125)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "confusion_matrix",
    "eer_and_mindcf",
    "mean_std",
    "top1_accuracy",
    "unweighted_accuracy",
    "weighted_accuracy",
]


def _as_labels(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(torch.as_tensor(y_true).cpu()).reshape(-1)
    y_pred = np.asarray(torch.as_tensor(y_pred).cpu()).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    if not (np.issubdtype(y_true.dtype, np.integer) and np.issubdtype(y_pred.dtype, np.integer)):
        raise ValueError("labels must be integer class indices")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: fraction of correct predictions over all utterances."""
    y_true, y_pred = _as_labels(y_true, y_pred)
    return float((y_true == y_pred).mean())


def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: mean per-class recall over the classes present in ``y_true``."""
    y_true, y_pred = _as_labels(y_true, y_pred)
    recalls = [float((y_pred[y_true == label] == label).mean()) for label in np.unique(y_true)]
    return float(np.mean(recalls))


def top1_accuracy(scores, labels) -> float:
    """Accuracy of ``argmax(scores (N, C))`` against ``labels (N,)`` (speaker identification)."""
    scores = torch.as_tensor(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, C), got shape {tuple(scores.shape)}")
    return weighted_accuracy(labels, scores.argmax(dim=1))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` int64 counts; row = true class, column = predicted class (sklearn's layout)."""
    y_true, y_pred = _as_labels(y_true, y_pred)
    if min(y_true.min(), y_pred.min()) < 0:
        raise ValueError("labels must be non-negative class indices")
    largest = int(max(y_true.max(), y_pred.max())) + 1
    num_classes = largest if num_classes is None else num_classes
    if largest > num_classes:
        raise ValueError(f"a label ({largest - 1}) is out of range for {num_classes} classes")
    # one bincount over the flattened (true, predicted) cell index
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _error_counts(
    positive: torch.Tensor, negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Misses and false alarms at SpeechBrain's candidate thresholds.

    The thresholds are SpeechBrain's: every distinct score plus the midpoints between
    neighbours; a trial is accepted when its score is above the threshold. Returns
    ``(thresholds (K,), misses (K,) int64, false_alarms (K,) int64)``.
    """
    distinct = torch.unique(torch.cat([positive, negative]))  # sorted
    midpoints = (distinct[:-1] + distinct[1:]) / 2
    thresholds, _ = torch.sort(torch.cat([distinct, midpoints]))
    # counts of scores <= each threshold, by binary search in the sorted scores
    misses = torch.searchsorted(torch.sort(positive)[0], thresholds, right=True)
    negative_at_or_below = torch.searchsorted(torch.sort(negative)[0], thresholds, right=True)
    return thresholds, misses, negative.numel() - negative_at_or_below


def eer_and_mindcf(
    scores,
    labels,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, float]:
    """Equal error rate and minimum detection cost of verification trials.

    Same thresholds and definitions as ``speechbrain.utils.metric_stats.EER`` and ``minDCF``
    (and equal to them, tested), computed by binary search in the sorted scores: SpeechBrain's
    ``minDCF`` compares every score with every threshold in one ``(K, N)`` tensor (over 10 GB
    for the 37,720 VoxCeleb1-O trials) and its ``EER`` loops over thresholds in Python.

    Args:
        scores: ``(N,)`` trial scores, higher = more likely the same speaker.
        labels: ``(N,)`` 1 for target (same-speaker) trials, 0 for non-target.
        p_target, c_miss, c_fa: detection cost parameters (VoxCeleb: 0.01, 1, 1).

    Returns:
        ``eer`` (a fraction in [0, 1]) and ``eer_threshold``; ``min_dcf``, the minimum of
        ``C_det = c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target)`` divided by
        ``min(c_miss * p_target, c_fa * (1 - p_target))`` (the normalised value that NIST and
        VoxCeleb papers report; 1.0 = no better than always rejecting), with
        ``min_dcf_threshold``; and ``min_dcf_unnormalized``, the raw minimum that
        SpeechBrain's ``minDCF`` returns.

    Example:
        >>> result = eer_and_mindcf([0.9, 0.8, 0.3, 0.4, 0.1], [1, 1, 1, 0, 0])
        >>> round(result["eer"], 4), round(result["min_dcf"], 4)
        (0.4167, 0.3333)
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    labels = torch.as_tensor(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels differ in length: {scores.numel()} vs {labels.numel()}"
        )
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores hold non-finite values")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be 0 (non-target) or 1 (target)")
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie in (0, 1), got {p_target}")
    positive, negative = scores[labels == 1], scores[labels == 0]
    if positive.numel() == 0 or negative.numel() == 0:
        raise ValueError("need at least one target and one non-target trial")
    thresholds, misses, false_alarms = _error_counts(positive, negative)
    num_positive, num_negative = positive.numel(), negative.numel()
    miss_rate = misses.double() / num_positive
    false_alarm_rate = false_alarms.double() / num_negative
    # |P_fa - P_miss| scaled by N_pos * N_neg is an exact integer, so equal gaps tie exactly and
    # argmin keeps the first (lowest) threshold, as SpeechBrain's strict "<" scan does
    gap = (false_alarms * num_positive - misses * num_negative).abs()
    eer_index = int(torch.argmin(gap))
    eer = (false_alarm_rate[eer_index] + miss_rate[eer_index]) / 2
    cost = c_miss * miss_rate * p_target + c_fa * false_alarm_rate * (1 - p_target)
    dcf_index = int(torch.argmin(cost))
    default_cost = min(c_miss * p_target, c_fa * (1 - p_target))
    return {
        "eer": float(eer),
        "eer_threshold": float(thresholds[eer_index]),
        "min_dcf": float(cost[dcf_index]) / default_cost,
        "min_dcf_threshold": float(thresholds[dcf_index]),
        "min_dcf_unnormalized": float(cost[dcf_index]),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (``ddof=0``) of per-fold values."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(values.mean()), float(values.std())
