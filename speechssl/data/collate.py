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
    """A padded batch of waveforms and the targets its rows carry.

    Attributes:
        wav: ``(B, T)`` float32, zero after each utterance's length.
        lengths: ``(B,)`` int64 valid samples per row.
        indices: ``(B,)`` int64 manifest rows.
        labels: ``(B,)`` int64 utterance labels, or ``None`` when the dataset has no label
            column.
        num_skipped: items of this batch that could not be loaded (``B`` excludes them).
        skipped: their ``{"index", "path", "reason", "detail"}`` records, for ``skipped.jsonl``.
        frame_labels: ``(B, L)`` int64 frame labels (HuBERT targets) padded with
            ``pad_label``, or ``None`` when the dataset has none.
        frame_label_lengths: ``(B,)`` int64 valid frame labels per row (with ``frame_labels``).
    """

    wav: torch.Tensor
    lengths: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor | None = None
    num_skipped: int = 0
    skipped: list[dict] = field(default_factory=list)
    frame_labels: torch.Tensor | None = None
    frame_label_lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.wav.shape[0]

    def _map(self, function) -> Batch:
        def optional(tensor):
            return None if tensor is None else function(tensor)

        return replace(
            self,
            wav=function(self.wav),
            lengths=function(self.lengths),
            indices=function(self.indices),
            labels=optional(self.labels),
            frame_labels=optional(self.frame_labels),
            frame_label_lengths=optional(self.frame_label_lengths),
        )

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        """Move every tensor (asynchronously from pinned memory when possible)."""
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` on custom batch types."""
        return self._map(lambda tensor: tensor.pin_memory())


def collate(items: Sequence[dict | SkippedItem | None], pad_label: int = 0) -> Batch:
    """Pad ``{"index", "wav" (T,), "label"?, "frame_labels" (L,)?}`` items into a :class:`Batch`.

    ``None`` and :class:`~speechssl.data.dataset.SkippedItem` entries are dropped and
    counted. A batch whose items were all skipped has ``B = 0`` (``wav (0, 0)``); skip
    the step then. Frame labels are padded to ``(B, L_max)`` with ``pad_label``: a valid
    class index (0), because the masked-prediction objective range-checks every entry; it
    never reaches the loss, which only reads labels under ``frame_label_lengths``.
    """
    kept = [item for item in items if isinstance(item, dict)]
    skipped = [item.to_record() for item in items if isinstance(item, SkippedItem)]
    num_skipped = len(items) - len(kept)
    wav, lengths = _pad([item["wav"] for item in kept], 0.0, torch.float32)
    indices = torch.tensor([item["index"] for item in kept], dtype=torch.int64)
    labels = frame_labels = frame_label_lengths = None
    if kept and "label" in kept[0]:
        labels = torch.tensor([item["label"] for item in kept], dtype=torch.int64)
    if kept and "frame_labels" in kept[0]:
        sequences = [item["frame_labels"] for item in kept]
        frame_labels, frame_label_lengths = _pad(sequences, pad_label, torch.int64)
    return Batch(
        wav, lengths, indices, labels, num_skipped, skipped, frame_labels, frame_label_lengths
    )


def _pad(
    sequences: Sequence[torch.Tensor], value: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(T_i,), ...] -> ((N, T_max) padded with value, lengths (N,))``."""
    lengths = torch.tensor([sequence.shape[0] for sequence in sequences], dtype=torch.int64)
    max_length = int(lengths.max()) if sequences else 0
    padded = torch.full((len(sequences), max_length), value, dtype=dtype)
    for row, sequence in enumerate(sequences):
        padded[row, : sequence.shape[0]] = sequence
    return padded, lengths
