"""Real speech for the feature tests: a handful of utterances from the bundled demo corpus."""

from __future__ import annotations

import pytest
import torch

from speechssl import audio
from speechssl.demo import demo_path


def _demo_files(corpus: str, pattern: str, count: int) -> list:
    try:
        root = demo_path(corpus)
    except FileNotFoundError as error:
        pytest.skip(f"demo corpus missing: {error}")
    files = sorted(root.rglob(pattern))
    if len(files) < count:
        pytest.skip(f"demo corpus {root} holds {len(files)} {pattern} files, need {count}")
    # spread the picks over speakers rather than taking one speaker's first files
    step = len(files) // count
    return files[::step][:count]


@pytest.fixture(scope="session")
def speech_16k() -> list[torch.Tensor]:
    """Five LibriSpeech demo utterances at 16 kHz, ``(T,)`` float32 each, of different lengths
    (real speech, decoded from the demo's Ogg Opus)."""
    return [audio.load(path, sample_rate=16000) for path in _demo_files("librispeech", "*.opus", 5)]


@pytest.fixture(scope="session")
def speech_22k() -> list[torch.Tensor]:
    """Three LJSpeech demo utterances at 22.05 kHz."""
    return [audio.load(path, sample_rate=22050) for path in _demo_files("ljspeech", "*.ogg", 3)]


def pad_batch(
    wavs: list[torch.Tensor], extra: int = 1234, pad_value: float | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack into ``(B, T)`` with ``extra`` samples past the longest row.

    The padding holds loud noise (or ``pad_value``) so a test fails if it leaks into a feature.
    """
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([wav.numel() for wav in wavs])
    batch = torch.randn(len(wavs), int(lengths.max()) + extra, generator=generator) * 10
    if pad_value is not None:
        batch.fill_(pad_value)
    for row, wav in enumerate(wavs):
        batch[row, : wav.numel()] = wav
    return batch, lengths


@pytest.fixture(scope="session")
def padded():
    """``pad_batch`` as a fixture: ``from conftest import`` can pick another folder's conftest."""
    return pad_batch
