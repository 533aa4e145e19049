"""TTS batches: (text, waveform, speaker) items padded into a :class:`TTSBatch`.

Workers only read audio and encode text; mel targets are computed on the training device by
:class:`~speechssl.tts.model.TacotronTTS` from ``wav``/``lengths``.

Example:
    >>> import torch
    >>> from speechssl.tts.text import CharacterFrontend
    >>> frontend = CharacterFrontend()
    >>> items = [{"index": 0, "wav": torch.ones(300), "tokens": frontend.encode("hi"), "speaker": 2},
    ...          {"index": 1, "wav": torch.ones(500), "tokens": frontend.encode("a"), "speaker": 0}]
    >>> batch = collate_tts(items)
    >>> batch.tokens.shape, batch.token_lengths.tolist(), batch.lengths.tolist(), batch.speakers.tolist()
    (torch.Size([2, 3]), [3, 2], [300, 500], [2, 0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from speechssl import audio
from speechssl.data.dataset import SkippedItem
from speechssl.tts.text import CharacterFrontend, pad_tokens

__all__ = ["TTSBatch", "TTSDataset", "collate_tts"]


@dataclass
class TTSBatch:
    """A padded batch of utterances with their text.

    Attributes:
        tokens: ``(B, L)`` int64 character ids, zero-padded.
        token_lengths: ``(B,)`` int64.
        wav: ``(B, T)`` float32 waveforms at the model's sample rate, zero-padded.
        lengths: ``(B,)`` int64 samples (the Trainer counts throughput from it).
        speakers: ``(B,)`` int64 speaker ids of the model's speaker table.
        indices: ``(B,)`` int64 dataset rows.
        num_skipped, skipped: items that could not be loaded (as in ``speechssl.data.Batch``).
    """

    tokens: torch.Tensor
    token_lengths: torch.Tensor
    wav: torch.Tensor
    lengths: torch.Tensor
    speakers: torch.Tensor
    indices: torch.Tensor
    num_skipped: int = 0
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def _map(self, function) -> TTSBatch:
        names = ("tokens", "token_lengths", "wav", "lengths", "speakers", "indices")
        return replace(self, **{name: function(getattr(self, name)) for name in names})

    def to(self, device: torch.device | str, non_blocking: bool = True) -> TTSBatch:
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TTSBatch:
        return self._map(lambda tensor: tensor.pin_memory())


def collate_tts(items: Sequence[dict | SkippedItem | None]) -> TTSBatch:
    """Pad ``{"index", "wav" (T,), "tokens" (L,), "speaker"}`` items; skipped ones are dropped."""
    kept = [item for item in items if isinstance(item, dict)]
    skipped = [item.to_record() for item in items if isinstance(item, SkippedItem)]
    if not kept:
        raise ValueError("collate_tts: every item of the batch was skipped")
    tokens, token_lengths = pad_tokens([item["tokens"] for item in kept])
    lengths = torch.tensor([item["wav"].shape[0] for item in kept], dtype=torch.int64)
    wav = torch.zeros(len(kept), int(lengths.max()), dtype=torch.float32)
    for row, item in enumerate(kept):
        wav[row, : item["wav"].shape[0]] = item["wav"]
    speakers = torch.tensor([int(item["speaker"]) for item in kept], dtype=torch.int64)
    indices = torch.tensor([int(item["index"]) for item in kept], dtype=torch.int64)
    return TTSBatch(
        tokens, token_lengths, wav, lengths, speakers, indices, len(items) - len(kept), skipped
    )


class TTSDataset(torch.utils.data.Dataset):
    """Manifest rows with ``audio`` and ``text`` -> items for :func:`collate_tts`.

    Args:
        rows: manifest rows (``id``, ``audio``, ``text``, optional ``speaker``).
        sample_rate: every waveform is resampled to this rate (the model's mel rate).
        speaker_ids: ``{speaker name: id}``; without it (or for rows without a ``speaker``)
            every row gets ``default_speaker``, e.g. the id from ``TacotronTTS.add_speaker``.
        frontend: the text front end (a fresh :class:`CharacterFrontend` by default).
    """

    def __init__(
        self,
        rows: Sequence[Mapping],
        sample_rate: int,
        speaker_ids: Mapping[str, int] | None = None,
        frontend: CharacterFrontend | None = None,
        default_speaker: int = 0,
    ) -> None:
        self.rows = list(rows)
        for number, row in enumerate(self.rows):
            if "audio" not in row or not str(row.get("text", "")).strip():
                raise ValueError(f"TTSDataset row {number} ({row.get('id')}) needs audio and text")
        self.sample_rate = sample_rate
        self.speaker_ids = dict(speaker_ids or {})
        self.frontend = frontend or CharacterFrontend()
        self.default_speaker = default_speaker

    def __len__(self) -> int:
        return len(self.rows)

    def speaker_of(self, row: Mapping) -> int:
        name = row.get("speaker")
        if name is None or not self.speaker_ids:  # single-speaker data (e.g. fine-tuning)
            return self.default_speaker
        if str(name) not in self.speaker_ids:
            raise ValueError(f"speaker {name!r} is not in speaker_ids")
        return self.speaker_ids[str(name)]

    def __getitem__(self, index: int) -> dict | SkippedItem:
        row = self.rows[index]
        try:
            wav = audio.load(row["audio"], sample_rate=self.sample_rate)
        except audio.AudioError as error:
            return SkippedItem(index, str(row["audio"]), error.reason, str(error))
        return {
            "index": index,
            "wav": wav,
            "tokens": self.frontend.encode(row["text"]),
            "speaker": self.speaker_of(row),
        }
