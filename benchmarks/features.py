"""Batched device-side Fbank against per-utterance peers, on the same real audio, in one process.

Rows (80 mel bins, 25 ms / 10 ms frames, 16 kHz):

- ``ours Fbank``: ``speechssl.features.Fbank`` (Kaldi-compatible) on shuffled, zero-padded
  batches, as a data loader delivers them, on ``--device``;
- ``ours LogMel``: ``speechssl.features.LogMel`` with the librosa peer's settings, batched;
- ``kaldi.fbank``: ``torchaudio.compliance.kaldi.fbank`` one utterance at a time (CPU);
- ``librosa``: ``librosa.feature.melspectrogram`` + log, one utterance at a time (CPU);
- ``speechbrain``: ``speechbrain.lobes.features.Fbank`` one utterance at a time (CPU), and the
  same module on the padded batches (it has no length handling: padding frames are computed).

Every repeat runs each row over the whole corpus, rows interleaved in a rotating order so
background load hits all of them alike; the table gives the median seconds per pass, the
seconds of audio per second, and the speed-up of ``ours Fbank`` over each row.

Usage:
    python benchmarks/features.py                       # demo LibriSpeech, ~1.4 s utterances
    python benchmarks/features.py --concat 8            # ~11 s utterances (LibriSpeech-like)
    python benchmarks/features.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import torch
from speechbrain.lobes.features import Fbank as SpeechBrainFbank
from torchaudio.compliance import kaldi

from speechssl import audio
from speechssl.data.prepare.common import audio_files
from speechssl.features import Fbank, LogMel

DEMO_ROOT = Path(__file__).parents[1] / "speechssl" / "demo_data" / "LibriSpeech"
N_MELS = 80


def load_corpus(root: Path, concat: int, limit: int | None) -> list[torch.Tensor]:
    """Every audio file (FLAC, Opus, ...) under ``root`` at 16 kHz, ``concat`` consecutive files joined into one."""
    paths = audio_files(root, "**/*")[:limit]
    if not paths:
        raise SystemExit(f"no audio files under {root}")
    wavs = [audio.load(path, sample_rate=16000) for path in paths]
    return [torch.cat(wavs[i : i + concat]) for i in range(0, len(wavs), concat)]


def make_batches(
    wavs: list[torch.Tensor], batch_size: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (not length-sorted) zero-padded ``(B, T)`` batches with ``(B,)`` lengths."""
    order = list(range(len(wavs)))
    random.Random(0).shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        chosen = [wavs[i] for i in order[start : start + batch_size]]
        lengths = torch.tensor([w.numel() for w in chosen])
        batch = torch.zeros(len(chosen), int(lengths.max()))
        for row, wav in enumerate(chosen):
            batch[row, : wav.numel()] = wav
        batches.append((batch.to(device), lengths.to(device)))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEMO_ROOT, help="folder of audio files")
    parser.add_argument("--device", default="cpu", help="device for ours (peers run on the CPU)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--concat", type=int, default=1, help="join N files per utterance")
    parser.add_argument("--limit", type=int, default=None, help="use the first N files")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    wavs = load_corpus(args.root, args.concat, args.limit)
    numpy_wavs = [w.numpy() for w in wavs]
    batches = make_batches(wavs, args.batch_size, device)
    cpu_batches = make_batches(wavs, args.batch_size, torch.device("cpu"))
    total_seconds = sum(w.numel() for w in wavs) / 16000

    fbank = Fbank(n_mels=N_MELS).to(device)
    logmel = LogMel(
        sample_rate=16000,
        n_fft=512,
        win_length=400,
        hop_length=160,
        f_min=20.0,
        f_max=None,
        n_mels=N_MELS,
        power=2.0,
        floor=1e-10,
    ).to(device)
    speechbrain = SpeechBrainFbank(n_mels=N_MELS)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def ours_fbank() -> None:
        for batch, lengths in batches:
            fbank(batch, lengths)
        synchronize()

    def ours_logmel() -> None:
        for batch, lengths in batches:
            logmel(batch, lengths)
        synchronize()

    def kaldi_per_utterance() -> None:
        for wav in wavs:
            kaldi.fbank(wav[None], num_mel_bins=N_MELS, dither=0.0)

    def librosa_per_utterance() -> None:
        for wav in numpy_wavs:
            mel = librosa.feature.melspectrogram(
                y=wav,
                sr=16000,
                n_fft=512,
                win_length=400,
                hop_length=160,
                fmin=20.0,
                n_mels=N_MELS,
            )
            np.log(np.maximum(mel, 1e-10))

    def speechbrain_per_utterance() -> None:
        for wav in wavs:
            speechbrain(wav[None])

    def speechbrain_batched() -> None:
        for batch, _ in cpu_batches:
            speechbrain(batch)

    rows: dict[str, Callable[[], None]] = {
        f"ours Fbank batched ({device.type})": ours_fbank,
        f"ours LogMel batched ({device.type})": ours_logmel,
        "kaldi.fbank per utterance (cpu)": kaldi_per_utterance,
        "librosa per utterance (cpu)": librosa_per_utterance,
        "speechbrain Fbank per utterance (cpu)": speechbrain_per_utterance,
        "speechbrain Fbank batched, no lengths (cpu)": speechbrain_batched,
    }
    with torch.inference_mode():
        for run in rows.values():  # warm-up: JIT caches, allocator, CUDA context
            run()
        timings: dict[str, list[float]] = {name: [] for name in rows}
        names = list(rows)
        for repeat in range(args.repeats):
            rotation = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in rotation:
                start = time.perf_counter()
                rows[name]()
                timings[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(times) for name, times in timings.items()}
    ours = medians[names[0]]
    peers = [name for name in names if "per utterance" in name]
    fastest_peer = min(peers, key=medians.__getitem__)
    print(
        f"{len(wavs)} utterances, {total_seconds:.1f} s of audio (mean "
        f"{total_seconds / len(wavs):.2f} s), batch size {args.batch_size}, "
        f"{len(batches)} batches, {args.repeats} repeats, torch threads "
        f"{torch.get_num_threads()}, ours on {device}"
    )
    print(f"| {'row':<45} | median s | audio s / s | ours Fbank speed-up |")
    print(f"| {'-' * 45} | -------: | ----------: | ------------------: |")
    for name in names:
        print(
            f"| {name:<45} | {medians[name]:8.4f} | {total_seconds / medians[name]:11.0f} | "
            f"{medians[name] / ours:18.2f}x |"
        )
    print(
        f"ours Fbank vs fastest per-utterance peer ({fastest_peer}): "
        f"{medians[fastest_peer] / ours:.2f}x"
    )


if __name__ == "__main__":
    main()
