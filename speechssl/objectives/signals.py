"""Learning signals: the numbers that say whether a pre-training run learns anything.

A loss going down is not yet learning: a predictive-coding loss falls as soon as the model
copies its input, a masked-prediction accuracy rises as soon as it predicts the most
frequent cluster. Each objective therefore logs, beside its loss, a metric that can be read
against a trivial baseline computed on the same frames. A metric ``<name>_baseline`` is the
baseline of ``<name>``: the curves plot draws it dashed in ``<name>``'s panel, and
:func:`learning_warnings` flags a run whose final ``<name>`` does not beat it.

Metric names (per batch, averaged over the logging window; ``valid`` rows in eval mode):

- ``l1_shift<n>``: predictive coding, L1 of the model's prediction of frame t + n;
- ``l1_shift<n>_baseline``: L1 of copying frame t as the prediction of frame t + n (same
  frames, same normalised features);
- ``l1_shift<n>_ratio``: model / baseline, below 1 once the model beats the copy (in
  results.json: the ratio of the final row's means);
- ``accuracy_masked``: HuBERT, top-1 accuracy (argmax over the codebook) on masked frames
  (fairseq ``correct_m_0 / count_m_0``);
- ``accuracy_masked_baseline``: always predicting the batch's most frequent label of those
  frames;
- ``accuracy_unmasked``: top-1 accuracy on the unmasked valid frames (``correct_u_0``);
- ``label_entropy``: entropy (nats) of the batch's labels over its valid frames;
- ``label_perplexity``: ``exp(label_entropy)``, the number of equally used clusters it
  amounts to;
- ``contrastive_accuracy``: UniSpeech-SAT, the share of (anchor, same-utterance draw) pairs
  whose positive scores above every other-utterance draw of that anchor;
- ``contrastive_accuracy_baseline``: its chance level, the mean of ``1 / (1 + negatives of
  the anchor)`` over the same pairs.

Lower is better for metrics whose name starts with ``l1`` or ``loss``; higher for the rest.

Example:
    >>> import torch
    >>> top1_accuracy(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    tensor(0.5000)
    >>> learning_warnings({"l1_shift3": 0.9, "l1_shift3_baseline": 0.7})
    ['l1_shift3 = 0.9 does not beat its baseline 0.7: the model has not learned more than the trivial predictor']
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = [
    "BASELINE_SUFFIX",
    "count_statistics",
    "label_statistics",
    "learning_warnings",
    "lower_is_better",
    "majority_accuracy",
    "top1_accuracy",
]

BASELINE_SUFFIX = "_baseline"


def lower_is_better(name: str) -> bool:
    """Whether a smaller value of metric ``name`` is better (L1 and loss metrics)."""
    return name.startswith(("l1", "loss"))


def top1_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Share of rows whose highest logit is the target: (N, C), (N,) -> 0-dim (0 when N = 0)."""
    if targets.numel() == 0:
        return logits.new_zeros((), dtype=torch.float32)
    return (logits.argmax(dim=-1) == targets).float().mean()


def majority_accuracy(targets: Tensor, num_classes: int) -> Tensor:
    """Accuracy of always predicting the most frequent of ``targets`` (N,): 0-dim.

    The best any constant predictor can do on these frames (chosen knowing them, so an
    optimistic baseline). 0 when N = 0.
    """
    if targets.numel() == 0:
        return torch.zeros((), device=targets.device)
    counts = torch.bincount(targets.reshape(-1), minlength=num_classes)
    return counts.max().float() / targets.numel()


def count_statistics(counts: Tensor) -> dict[str, Tensor]:
    """Entropy (nats), perplexity and fraction of classes used of a (C,) count vector.

    Example:
        >>> stats = count_statistics(torch.tensor([5, 5, 0, 0]))
        >>> round(float(stats["perplexity"]), 3), float(stats["used_fraction"])
        (2.0, 0.5)
    """
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        zero = counts.new_zeros(())
        return {"entropy": zero, "perplexity": zero + 1.0, "used_fraction": zero}
    probabilities = counts / total
    # 0 * log 0 = 0: the unused classes add nothing
    entropy = -(probabilities * probabilities.clamp(min=1e-300).log()).sum()
    return {
        "entropy": entropy,
        "perplexity": entropy.exp(),
        "used_fraction": (counts > 0).double().mean(),
    }


def label_statistics(labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    """:func:`count_statistics` of integer labels in ``[0, num_classes)`` (any shape)."""
    return count_statistics(torch.bincount(labels.reshape(-1).long(), minlength=num_classes))


def learning_warnings(metrics: Mapping[str, float]) -> list[str]:
    """One line per metric that does not beat its ``<name>_baseline`` in ``metrics``.

    ``metrics`` are one row of final figures (e.g. the last validation row). A tie counts
    as not beating the baseline.
    """
    lines = []
    for name, value in metrics.items():
        baseline = metrics.get(name + BASELINE_SUFFIX)
        if name.endswith(BASELINE_SUFFIX) or baseline is None:
            continue
        value, baseline = float(value), float(baseline)
        if math.isnan(value) or math.isnan(baseline):
            continue
        beaten = value < baseline if lower_is_better(name) else value > baseline
        if not beaten:
            lines.append(
                f"{name} = {value:.4g} does not beat its baseline {baseline:.4g}: the model has "
                "not learned more than the trivial predictor"
            )
    return lines
