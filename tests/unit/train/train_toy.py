"""Shared by the trainer tests and the subprocess script: a tiny corpus, loader and model.

The corpus is the first utterances of the bundled demo LibriSpeech (cropped to 1 s);
without it, seeded synthetic tones stand in. The model predicts the next 10 ms frame
from the current one (predictive coding in miniature); its loss is a per-utterance
mean, padding-free, so a global batch split over ranks or micro-batches gives the same
gradient as the whole batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechssl import audio
from speechssl.data.collate import collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import AudioDataset
from speechssl.data.prepare.common import audio_files
from speechssl.data.sampler import DurationBucketSampler

DEMO = (
    Path(__file__).resolve().parents[3]
    / "speechssl"
    / "demo_data"
    / "LibriSpeech"
    / "train-clean-100"
)
FRAME = 160  # 10 ms at 16 kHz


def corpus_rows(folder: str | Path, count: int = 16) -> list[dict]:
    """Manifest rows of ``count`` utterances (demo corpus, else tones written to ``folder``)."""
    files = audio_files(DEMO, "**/*")[:count] if DEMO.is_dir() else []
    rows = []
    if len(files) == count:
        for path in files:
            info = audio.info(path)
            rows.append(
                {
                    "id": path.stem,
                    "audio": str(path),
                    "duration": info.duration,
                    "sample_rate": info.sample_rate,
                }
            )
        return rows
    generator = np.random.default_rng(0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        duration = 0.4 + 0.05 * index
        time = np.arange(int(duration * 16000)) / 16000
        wav = 0.3 * np.sin(
            2 * np.pi * (150 + 20 * index) * time
        ) + 0.01 * generator.standard_normal(time.size)
        path = folder / f"tone{index:02d}.wav"
        audio.save(path, torch.from_numpy(wav.astype(np.float32)), 16000)
        rows.append(
            {"id": path.stem, "audio": str(path), "duration": duration, "sample_rate": 16000}
        )
    return rows


def make_loader(rows, rank: int = 0, world_size: int = 1, max_batch_seconds: float = 2.0):
    """DataLoader over the rows with the bucketing sampler sharded for ``rank``."""
    manifest = Manifest.from_rows(rows)
    dataset = AudioDataset(manifest, max_duration=1.0, seed=0)
    sampler = DurationBucketSampler(
        manifest.durations,
        max_batch_seconds=max_batch_seconds,
        num_buckets=2,
        seed=0,
        num_replicas=world_size,
        rank=rank,
        max_duration=1.0,
    )
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


class InterleavedSampler:
    """Yields rank 0's batch k, rank 1's batch k, ...: one process with grad_accum = R
    then sees, in each step, exactly the global batch of an R-process DDP step."""

    def __init__(self, samplers) -> None:
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(sampler) for sampler in self.samplers)

    def __iter__(self):
        for batches in zip(*self.samplers):
            yield from batches


def make_interleaved_loader(rows, world_size: int, max_batch_seconds: float = 2.0):
    loaders = [make_loader(rows, rank, world_size, max_batch_seconds) for rank in range(world_size)]
    sampler = InterleavedSampler([loader.batch_sampler for loader in loaders])
    return torch.utils.data.DataLoader(
        loaders[0].dataset, batch_sampler=sampler, collate_fn=collate
    )


class NextFrameModel(torch.nn.Module):
    """Predict frame t+1 from frame t; loss = mean over utterances of the per-utterance L1.

    ``nan_at`` lists forward calls (0-based, training only) whose loss is made NaN.
    """

    def __init__(self, hidden: int = 16, dropout: float = 0.0, nan_at=()) -> None:
        super().__init__()
        self.encoder_layer = torch.nn.Linear(FRAME, hidden)
        self.dropout = torch.nn.Dropout(dropout)
        self.predictor = torch.nn.Linear(hidden, FRAME)
        self.nan_at = set(nan_at)
        self.calls = 0

    def forward(self, batch):
        frames = batch.lengths // FRAME
        usable = int(frames.max()) * FRAME
        # (B, T) -> (B, F, FRAME): non-overlapping 10 ms frames
        x = batch.wav[:, :usable].reshape(batch.wav.shape[0], -1, FRAME) * 10
        prediction = self.predictor(self.dropout(torch.tanh(self.encoder_layer(x[:, :-1]))))
        error = (prediction - x[:, 1:]).abs().mean(dim=-1)  # (B, F-1)
        valid = torch.arange(error.shape[1], device=error.device)[None, :] < (frames[:, None] - 1)
        per_utterance = (error * valid).sum(dim=1) / (frames - 1).clamp(min=1)
        loss = per_utterance.mean()
        if self.training:
            if self.calls in self.nan_at:
                loss = loss * float("nan")
            self.calls += 1
        return loss, {"frames": valid.sum().float()}
