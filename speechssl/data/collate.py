"""Collate waveforms into a zero-padded batch with lengths; skipped items are dropped.

Example:
    >>> import torch
    >>> batch = collate([{"index": 3, "wav": torch.ones(2)}, None,
    ...                  {"index": 5, "wav": torch.ones(4)}])
    >>> batch.wav
    tensor([[1., 1., 0., 0.],
            [1., 1., 1., 1.]])
    >>> batch.lengths, batch.indices, batch.num_skipped
    (tensor([2, 4]), tensor([3, 5]), 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from speechssl.data.dataset import SkippedItem

__all__ = ["Batch", "collate"]


@dataclass
class Batch:
    """A padded batch of waveforms.

    Attributes:
        wav: ``(B, T)`` float32, zero after each utterance's length.
        lengths: ``(B,)`` int64 valid samples per row.
        indices: ``(B,)`` int64 manifest rows.
        labels: ``(B,)`` int64, or ``None`` when the dataset has no label column.
        num_skipped: items of this batch that could not be loaded (``B`` excludes them).
        skipped: their ``{"index", "path", "reason", "detail"}`` records, for ``skipped.jsonl``.
        label_lengths: ``(B,)`` int64 valid entries per row when ``labels`` is a padded
            ``(B, L)`` sequence (frame labels, see :mod:`speechssl.data.frame_labels`),
            else ``None``.
    """

    wav: torch.Tensor
    lengths: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor | None = None
    num_skipped: int = 0
    skipped: list[dict] = field(default_factory=list)
    label_lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.wav.shape[0]

    def _map(self, function) -> Batch:
        labels = None if self.labels is None else function(self.labels)
        label_lengths = None if self.label_lengths is None else function(self.label_lengths)
        return replace(
            self,
            wav=function(self.wav),
            lengths=function(self.lengths),
            indices=function(self.indices),
            labels=labels,
            label_lengths=label_lengths,
        )

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        """Move every tensor (asynchronously from pinned memory when possible)."""
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` on custom batch types."""
        return self._map(lambda tensor: tensor.pin_memory())


def collate(items: Sequence[dict | SkippedItem | None]) -> Batch:
    """Pad ``{"index", "wav" (T,), "label"?}`` items into a :class:`Batch`.

    ``None`` and :class:`~speechssl.data.dataset.SkippedItem` entries are dropped and
    counted. A batch whose items were all skipped has ``B = 0`` (``wav (0, 0)``); skip
    the step then.
    """
    kept = [item for item in items if isinstance(item, dict)]
    skipped = [item.to_record() for item in items if isinstance(item, SkippedItem)]
    num_skipped = len(items) - len(kept)
    lengths = torch.tensor([item["wav"].shape[0] for item in kept], dtype=torch.int64)
    max_length = int(lengths.max()) if len(kept) else 0
    wav = torch.zeros(len(kept), max_length, dtype=torch.float32)
    for row, item in enumerate(kept):
        wav[row, : item["wav"].shape[0]] = item["wav"]
    indices = torch.tensor([item["index"] for item in kept], dtype=torch.int64)
    labels = None
    if kept and "label" in kept[0]:
        labels = torch.tensor([item["label"] for item in kept], dtype=torch.int64)
    return Batch(wav, lengths, indices, labels, num_skipped, skipped)
