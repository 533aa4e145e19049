"""The one dataset over a compact manifest: read, random crop, targets; never features.

Workers only read audio (soundfile through :mod:`speechssl.audio`) and crop it; every
feature is computed on the device from the collated batch.

A file that cannot be read (``AudioError``: missing, empty, unreadable, truncated,
non-finite) does not stop a run: ``__getitem__`` returns a :class:`SkippedItem` carrying
the reason, :func:`speechssl.data.collate.collate` drops it and reports it in
``batch.skipped``, and the trainer appends those records to ``skipped.jsonl`` with
:func:`append_skipped`.

Example:
    >>> import os, tempfile, torch
    >>> from speechssl import audio
    >>> from speechssl.data.compact import Manifest
    >>> folder = tempfile.mkdtemp()
    >>> audio.save(os.path.join(folder, "a.wav"), torch.zeros(32000), 16000)
    >>> manifest = Manifest.from_rows([{"id": "a", "audio": os.path.join(folder, "a.wav"),
    ...     "duration": 2.0, "sample_rate": 16000, "speaker": "s1"}])
    >>> dataset = AudioDataset(manifest, max_duration=0.5, label_column="speaker")
    >>> item = dataset[0]
    >>> item["wav"].shape, item["label"], dataset.label_vocabulary
    (torch.Size([8000]), 0, ('s1',))
    >>> dataset2 = AudioDataset(manifest.subset([0]))
    >>> os.remove(os.path.join(folder, "a.wav"))
    >>> dataset2[0].reason
    'missing'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from speechssl import audio
from speechssl.data.compact import Manifest

__all__ = ["AudioDataset", "Manifest", "SkippedItem", "append_skipped"]


@dataclass(frozen=True)
class SkippedItem:
    """Stands in for an utterance that could not be loaded; the collate drops it."""

    index: int
    path: str
    reason: str
    detail: str = ""

    def to_record(self) -> dict:
        """The ``skipped.jsonl`` row: ``{"index", "path", "reason", "detail"}``."""
        return asdict(self)


def append_skipped(path: str | os.PathLike, records: Iterable[dict | SkippedItem]) -> int:
    """Append skip records to a ``skipped.jsonl`` (created if absent); returns how many."""
    records = [r.to_record() if isinstance(r, SkippedItem) else r for r in records]
    if not records:
        return 0
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:
        file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return len(records)


class AudioDataset(torch.utils.data.Dataset):
    """The one dataset: ``{"index", "wav" (T,) float32}`` plus whatever targets a row has.

    Targets, each optional:

    * ``"label"`` (int): an utterance label from a categorical manifest column
      (``label_column``, e.g. ``"speaker"``), numbered by ``label_vocabulary``;
    * ``"frame_labels"`` ``(L,)`` int64: a label sequence at ``label_rate`` per second (the
      HuBERT targets of :mod:`speechssl.targets`). Random crops then start and end on whole
      label frames (multiples of ``sample_rate / label_rate`` samples), and the labels are
      cropped with the audio, so they stay aligned.

    Args:
        manifest: a :class:`~speechssl.data.compact.Manifest` (or a JSONL path).
        sample_rate: output rate; files at another rate are resampled.
        max_duration: seconds; longer utterances are randomly cropped to this length (to
            ``floor(max_duration * label_rate)`` whole label frames with frame labels). The
            crop start is drawn from ``numpy.random.default_rng((seed, epoch, index))``, so
            it is the same in any worker and on any rerun; call :meth:`set_epoch` each
            epoch (before the DataLoader iterator is created; persistent workers would keep
            the epoch they were started with).
        label_column: a categorical manifest column (``"speaker"``, ``"label"``, ...) to
            return as an int ``label``.
        label_vocabulary: the label order (e.g. the training set's, so that a test set maps
            the same way); default: the column's values sorted.
        frame_labels: one int array of frame labels per manifest row, in row order.
        label_rate: frame labels per second; ``sample_rate / label_rate`` must be a whole
            number of samples (160 at 100 Hz, 320 at 50 Hz for 16 kHz audio).
        seed: base seed of the random crops.

    Raises:
        ValueError: a row has no label, a label outside ``label_vocabulary``, frame labels
            for a different number of rows, or a label rate that is not a whole hop.
    """

    def __init__(
        self,
        manifest: Manifest | str | os.PathLike,
        sample_rate: int = 16000,
        max_duration: float | None = None,
        label_column: str | None = None,
        label_vocabulary: Sequence | None = None,
        seed: int = 0,
        *,
        frame_labels: Sequence[np.ndarray] | None = None,
        label_rate: float | None = None,
    ) -> None:
        if not isinstance(manifest, Manifest):
            manifest = Manifest.from_jsonl(manifest)
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration must be positive seconds, got {max_duration}")
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.max_duration = max_duration
        self.seed = seed
        self.epoch = 0
        self.label_column = label_column
        self.label_vocabulary: tuple | None = None
        self._labels: np.ndarray | None = None
        if label_column is not None:
            self._labels, self.label_vocabulary = self._encode_labels(
                label_column, label_vocabulary
            )
        self.frame_labels: list[torch.Tensor] | None = None
        self.label_rate: float | None = None
        self.hop: int | None = None
        self.max_labels: int | None = None
        if frame_labels is not None:
            self._set_frame_labels(frame_labels, label_rate)

    def _set_frame_labels(self, frame_labels: Sequence[np.ndarray], label_rate: float | None):
        if len(frame_labels) != len(self.manifest):
            raise ValueError(
                f"{len(frame_labels)} label sequences for {len(self.manifest)} utterances"
            )
        if label_rate is None or label_rate <= 0:
            raise ValueError(f"frame labels need a positive label_rate, got {label_rate}")
        hop = self.sample_rate / label_rate
        if abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"sample_rate / label_rate must be a whole number of samples, got {hop}"
            )
        if self.max_duration is not None and self.max_duration * label_rate < 1:
            raise ValueError(f"max_duration {self.max_duration} s holds no label frame")
        self.frame_labels = [
            torch.as_tensor(np.asarray(values), dtype=torch.int64) for values in frame_labels
        ]
        self.label_rate = float(label_rate)
        self.hop = round(hop)
        if self.max_duration is not None:
            self.max_labels = math.floor(self.max_duration * label_rate)

    def _encode_labels(self, name: str, vocabulary: Sequence | None) -> tuple[np.ndarray, tuple]:
        column = self.manifest.column(name)
        if (column.codes < 0).any():
            missing = int((column.codes < 0).sum())
            raise ValueError(f"{missing} utterances have no {name!r}; filter the manifest first")
        if vocabulary is None:
            used = np.unique(column.codes)
            values = [column.vocabulary[code] for code in used]
            try:
                vocabulary = sorted(values)  # numbers sort as numbers
            except TypeError:
                vocabulary = sorted(values, key=str)  # mixed types
        vocabulary = tuple(vocabulary)
        position = {value: label for label, value in enumerate(vocabulary)}
        unknown = [value for value in column.vocabulary if value not in position]
        used_unknown = [v for v in unknown if (column.codes == column.vocabulary.index(v)).any()]
        if used_unknown:
            raise ValueError(f"{name} values not in label_vocabulary: {used_unknown[:5]}")
        # Lookup table manifest code -> label id, applied once to all rows.
        table = np.array([position.get(value, -1) for value in column.vocabulary], dtype=np.int64)
        return table[column.codes], vocabulary

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def crop_window(self, index: int) -> tuple[int, int]:
        """``(start, num_samples)`` to read, in samples at the file's rate (``-1`` = to the end)."""
        file_rate = int(self.manifest.sample_rates[index])
        if self.frame_labels is not None:
            first, count = self.crop_labels(index)
            if first == 0 and count == self.frame_labels[index].numel():
                return 0, -1
            # whole label frames: the crop starts on label `first`'s hop, in the file's samples
            samples_per_label = self.hop * file_rate / self.sample_rate
            return round(first * samples_per_label), round(count * samples_per_label)
        num_samples = round(float(self.manifest.durations[index]) * file_rate)
        if self.max_duration is None:
            return 0, -1
        crop = int(self.max_duration * file_rate)
        if num_samples <= crop:
            return 0, -1
        generator = np.random.default_rng((self.seed, self.epoch, index))
        return int(generator.integers(0, num_samples - crop + 1)), crop

    def crop_labels(self, index: int) -> tuple[int, int]:
        """``(first label, number of labels)`` of this epoch's crop of row ``index``'s frame
        labels (a dataset with frame labels only)."""
        if self.frame_labels is None:
            raise ValueError("this dataset has no frame labels")
        num_labels = self.frame_labels[index].numel()
        if self.max_labels is None or num_labels <= self.max_labels:
            return 0, num_labels
        generator = np.random.default_rng((self.seed, self.epoch, index))
        return int(generator.integers(0, num_labels - self.max_labels + 1)), self.max_labels

    def __getitem__(self, index: int) -> dict | SkippedItem:
        index = int(index)
        path = self.manifest.audio_path(index)
        start, num_samples = self.crop_window(index)
        try:
            wav = audio.load(path, self.sample_rate, start=start, num_samples=num_samples)
        except audio.AudioError as error:
            return SkippedItem(index, path, error.reason, error.detail)
        if wav.numel() == 0:
            return SkippedItem(index, path, "empty", "no samples in the read window")
        item = {"index": index}
        if self.frame_labels is not None:
            first, count = self.crop_labels(index)
            if num_samples != -1:
                wav = wav[: count * self.hop]  # resampling may round up by a sample
            item["frame_labels"] = self.frame_labels[index][first : first + count]
        elif self.max_duration is not None:
            # Resampling can round up by a sample; the crop bound is a promise.
            wav = wav[: int(self.max_duration * self.sample_rate)]
        item["wav"] = wav
        if self._labels is not None:
            item["label"] = int(self._labels[index])
        return item
