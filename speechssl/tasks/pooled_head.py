"""Train a frozen, linearly pooling head on cached per-layer means: the same function, once.

SUPERB's utterance head is ``output(dropout(mean_t(projector(sum_l w_l h_lt))))``. The
weighted layer sum and the projector are affine, so the mean over frames can move inside
them: the head's output on an utterance equals its output on the utterance's per-layer
mean vectors, read as one-frame hidden states. A frozen upstream's per-layer means are
computed once (:class:`speechssl.tasks.pooled.FeatureCache`), so every epoch, seed and
fold trains the head without running the encoder again. This holds when

* the upstream is frozen (its hidden states never change),
* the head is an :class:`~speechssl.heads.classifier.UtteranceClassifier` with a weighted
  layer sum without layer norm and mean pooling (attentive pooling or per-frame
  normalisation are not linear in the frames).

Training then sees whole utterances, never random crops. After training, the head's
weights are simply used under the waveform model (``UtteranceClassificationModel``).

Example:
    >>> import torch
    >>> from speechssl.heads.classifier import UtteranceClassifier
    >>> head = UtteranceClassifier(4, num_classes=3, projector_dim=8, num_layers=2)
    >>> hidden = (torch.randn(2, 5, 4), torch.randn(2, 5, 4))  # (B, F, D) per layer
    >>> lengths = torch.tensor([5, 3])
    >>> from speechssl.tasks.pooled import pool_hidden_states
    >>> means = pool_hidden_states(hidden, lengths)[:, :, 0]  # (B, L + 1, D)
    >>> torch.allclose(head(hidden, lengths), head_logits_from_means(head, means), atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from speechssl.data.compact import Manifest
from speechssl.heads.classifier import UtteranceClassifier
from speechssl.heads.pooling import MaskedMeanPooling
from speechssl.heads.transfer import UtteranceClassificationModel

__all__ = [
    "PooledBatch",
    "PooledHeadModel",
    "head_logits_from_means",
    "label_indices",
    "pooled_loader",
    "pools_linearly",
]


def pools_linearly(model: nn.Module) -> bool:
    """Whether ``model``'s head output is a function of per-layer utterance means."""
    if not isinstance(model, UtteranceClassificationModel) or model.mode != "frozen":
        return False
    head = model.head
    return (
        isinstance(head, UtteranceClassifier)
        and isinstance(head.pooling, MaskedMeanPooling)
        and head.layer_sum is not None
        and not head.layer_sum.layer_norm
    )


def head_logits_from_means(head: UtteranceClassifier, means: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, C)`` of ``head`` from per-layer means ``(B, L + 1, D)``."""
    # each layer's mean is a one-frame hidden state (B, 1, D)
    hidden = tuple(means[:, layer : layer + 1, :] for layer in range(means.shape[1]))
    ones = torch.ones(means.shape[0], dtype=torch.long, device=means.device)
    return head(hidden, ones)


@dataclass
class PooledBatch:
    """``features (B, L + 1, D)`` per-layer means and ``labels (B,)`` class indices."""

    features: torch.Tensor
    labels: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> PooledBatch:
        return replace(
            self,
            features=self.features.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return self.labels.shape[0]


class PooledHeadModel(nn.Module):
    """The head alone, trained on :class:`PooledBatch` (the Trainer's model contract)."""

    def __init__(self, head: UtteranceClassifier) -> None:
        super().__init__()
        self.head = head

    def forward(self, batch: PooledBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = head_logits_from_means(self.head, batch.features)
        loss = F.cross_entropy(logits, batch.labels)
        accuracy = (logits.argmax(dim=-1) == batch.labels).float().mean()
        return loss, {"accuracy": accuracy.detach()}


def label_indices(manifest: Manifest, column: str, vocabulary: Sequence[str]) -> torch.Tensor:
    """``(N,)`` index of each row's ``column`` value in ``vocabulary``.

    Raises:
        ValueError: a missing column or a value outside the vocabulary.
    """
    if column not in manifest.columns:
        raise ValueError(f"the manifest has no {column!r} column")
    position = {str(label): index for index, label in enumerate(vocabulary)}
    values = [str(value) for value in manifest.column(column).values()]
    unknown = sorted(set(values) - set(position))
    if unknown:
        raise ValueError(f"{column} values outside the label set: {unknown[:5]}")
    return torch.tensor([position[value] for value in values], dtype=torch.long)


def _collate(items) -> PooledBatch:
    features, labels = zip(*items)
    return PooledBatch(torch.stack(features), torch.stack(labels))


def pooled_loader(
    means: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
) -> DataLoader:
    """Batches of :class:`PooledBatch`; training loaders shuffle with a seeded generator."""
    dataset = list(zip(means, labels))
    generator = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(
        dataset,
        batch_size=max(int(batch_size), 1),
        shuffle=train,
        generator=generator,
        collate_fn=_collate,
    )
