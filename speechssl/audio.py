"""Audio file I/O through soundfile, resampling and mono mixing through torchaudio.

torchaudio.load/save need torchcodec, which is not a dependency, so every read and
write in speechssl goes through this module.

Example:
    >>> import torch, tempfile, os
    >>> from speechssl import audio
    >>> path = os.path.join(tempfile.mkdtemp(), "tone.wav")
    >>> audio.save(path, torch.zeros(8000), 8000)
    >>> audio.load(path, sample_rate=16000).shape
    torch.Size([16000])
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

__all__ = [
    "AudioError",
    "AudioInfo",
    "info",
    "load",
    "resample",
    "save",
    "to_mono",
]


class AudioError(ValueError):
    """A file that cannot be used as audio; ``reason`` is a short machine-friendly tag."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"{self.path}: {reason}" + (f" ({detail})" if detail else "")
        super().__init__(message)


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    sample_rate: int
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else 0.0


def info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio header without decoding the samples.

    Raises:
        AudioError: ``missing``, ``empty`` or ``unreadable``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AudioError(path, "missing")
    if os.path.getsize(path) == 0:
        raise AudioError(path, "empty")
    try:
        header = soundfile.info(path)
    except Exception as error:  # noqa: BLE001 -- soundfile raises several types for bad headers
        raise AudioError(path, "unreadable", _first_line(error)) from None
    # libsndfile silently shortens a WAV whose data chunk was cut; its log says so
    # ("data : 32000 (should be 15978)"), which is the cheapest truncation check there is.
    if any(
        line.startswith("data :") and "should be" in line
        for line in (header.extra_info or "").splitlines()
    ):
        raise AudioError(path, "truncated", "data chunk shorter than its header says")
    return AudioInfo(int(header.samplerate), int(header.frames), int(header.channels))


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """Average channels: ``(T, C)`` or ``(T,)`` -> ``(T,)``."""
    if wav.dim() == 1:
        return wav
    if wav.dim() != 2:
        raise ValueError(f"expected (T,) or (T, C) audio, got shape {tuple(wav.shape)}")
    return wav.mean(dim=1)


def resample(wav: torch.Tensor, orig_sample_rate: int, sample_rate: int) -> torch.Tensor:
    """Band-limited resampling with ``torchaudio.functional.resample`` (identity if equal)."""
    if orig_sample_rate == sample_rate:
        return wav
    return AF.resample(wav, orig_sample_rate, sample_rate)


def load(
    path: str | os.PathLike,
    sample_rate: int | None = 16000,
    *,
    start: int = 0,
    num_samples: int = -1,
    check_finite: bool = True,
) -> torch.Tensor:
    """Load audio as a mono float32 tensor of shape ``(T,)``.

    Args:
        path: any format libsndfile reads (WAV, FLAC, OGG, ...).
        sample_rate: resample to this rate; ``None`` keeps the file's rate.
        start, num_samples: read a window, in samples at the *file's* rate
            (``num_samples=-1`` reads to the end).
        check_finite: raise on NaN/inf samples instead of passing them on.

    Raises:
        AudioError: ``missing``, ``empty``, ``unreadable``, ``truncated``, ``non-finite``.
    """
    path = os.fspath(path)
    header = info(path)
    try:
        data, file_rate = soundfile.read(
            path, start=start, frames=num_samples, dtype="float32", always_2d=True
        )
    except Exception as error:  # noqa: BLE001 -- libsndfile's errors for a cut file vary
        raise AudioError(path, "truncated", _first_line(error)) from None
    expected = header.num_samples - start if num_samples < 0 else num_samples
    if data.shape[0] < min(expected, header.num_samples - start):
        raise AudioError(path, "truncated", f"{data.shape[0]} of {expected} samples")
    wav = to_mono(torch.from_numpy(np.ascontiguousarray(data)))  # (T, C) -> (T,)
    if check_finite and not bool(torch.isfinite(wav).all()):
        raise AudioError(path, "non-finite", "NaN or inf samples")
    if sample_rate is not None:
        wav = resample(wav, int(file_rate), sample_rate)
    return wav.contiguous()


def save(
    path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str | None = None
) -> None:
    """Write ``(T,)`` or ``(T, C)`` float audio; the format follows the file extension."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    array = wav.detach().to(torch.float32).cpu().numpy()
    soundfile.write(path, array, sample_rate, subtype=subtype)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
