"""Benchmark: speechssl.cluster.KMeans against fairseq's MiniBatchKMeans on 39-dim MFCC.

fairseq's HuBERT recipe (examples/hubert/simple_kmeans/learn_kmeans.py) fits
``sklearn.cluster.MiniBatchKMeans(init="k-means++", batch_size=10000, n_init=20,
max_iter=100, max_no_improvement=100, tol=0.0, reassignment_ratio=0.0,
compute_labels=False)``. This script times that and ours in one process, interleaved
(the order alternates each repeat), and prints medians and ratios. Both models are
scored by the same neutral function (sklearn's ``pairwise_distances_argmin_min`` in
float64 over all frames), since sklearn's ``inertia_`` without ``compute_labels`` is only a
moving-average estimate.

Frames: Kaldi MFCC (``torchaudio.compliance.kaldi.mfcc``, ``use_energy=False``, on the
float waveform as fairseq's dump_mfcc_feature.py does) + deltas + delta-deltas = 39 dims,
100 Hz, from every audio file under ``speechssl/demo_data/``; if they hold fewer than
``--frames`` frames, perturbed copies (speed 0.9/1.1, gain, 30 dB white noise) are added,
and if there is no demo corpus, English speech is synthesised with espeak-ng (many
voices and rates). The script says which it did. The MFCC matrix is cached in ``--cache``.

Run:
    python benchmarks/kmeans.py                     # CPU, 200k frames, 100 clusters, 3 repeats
    python benchmarks/kmeans.py --device cuda       # the GPU figure (>= 50x less time)
    python benchmarks/kmeans.py --threads 1         # on a machine other jobs keep busy

On an oversubscribed CPU, multi-threaded torch (OpenMP barriers waiting on descheduled
threads) loses much more than scikit-learn does, so compare with ``--threads 1`` there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from speechssl import audio
from speechssl.cluster import KMeans
from speechssl.data.prepare.common import audio_files

SAMPLE_RATE = 16000
DEMO_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "speechssl", "demo_data")

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
]
VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
VARIANTS = ["", "+f1", "+f2", "+f3", "+f4", "+m1", "+m3", "+m5", "+m7"]


def mfcc_39(wav: torch.Tensor) -> torch.Tensor:
    """``(T,)`` 16 kHz float waveform -> ``(F, 39)`` MFCC + deltas + delta-deltas (fairseq's recipe)."""
    mfcc = torchaudio.compliance.kaldi.mfcc(
        wav.unsqueeze(0), sample_frequency=SAMPLE_RATE, use_energy=False
    )  # (1, T) -> (F, 13)
    mfcc = mfcc.T  # (F, 13) -> (13, F): compute_deltas works along the last axis
    deltas = torchaudio.functional.compute_deltas(mfcc)
    delta_deltas = torchaudio.functional.compute_deltas(deltas)
    return torch.cat([mfcc, deltas, delta_deltas]).T.contiguous()  # (39, F) -> (F, 39)


def perturb(wav: torch.Tensor, copy: int, generator: torch.Generator) -> torch.Tensor:
    """Copy ``copy`` >= 1 of a waveform: speed 0.9/1.1 by resampling, gain, 30 dB white noise."""
    speed = (0.9, 1.1, 0.95, 1.05)[copy % 4]
    wav = torchaudio.functional.resample(wav, int(SAMPLE_RATE * speed), SAMPLE_RATE)
    gain = 10 ** (float(torch.empty(1).uniform_(-6, 6, generator=generator)) / 20)
    noise = torch.randn(wav.shape, generator=generator) * wav.std() * 10 ** (-30 / 20)
    return wav * gain + noise


def synthesise(directory: str, seconds: float) -> list[str]:
    """espeak-ng English speech, about ``seconds`` long, varied in voice, variant and rate."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("no demo corpus and no espeak-ng: apt-get install -y espeak-ng")
    rng = np.random.default_rng(0)
    paths, total = [], 0.0
    while total < seconds:
        index = len(paths)
        voice = VOICES[index % len(VOICES)] + VARIANTS[(index // len(VOICES)) % len(VARIANTS)]
        text = " ".join(rng.choice(SENTENCES, size=4, replace=False))
        path = os.path.join(directory, f"utt{index:05d}.wav")
        rate = str(int(rng.integers(130, 200)))
        pitch = str(int(rng.integers(30, 70)))
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", rate, "-p", pitch, "-w", path, text], check=True
        )
        total += audio.info(path).duration
        paths.append(path)
    return paths


def build_frames(num_frames: int) -> tuple[np.ndarray, str]:
    """``(N >= num_frames, 39)`` float32 MFCC frames and a sentence saying where they came from."""
    paths = [str(path) for path in audio_files(Path(DEMO_DATA), "**/*")]
    temporary = None
    if paths:
        source = f"{len(paths)} demo-corpus files under speechssl/demo_data"
    else:
        temporary = tempfile.mkdtemp(prefix="kmeans_bench_")
        paths = synthesise(temporary, seconds=num_frames / 100 * 1.02)
        source = f"{len(paths)} espeak-ng utterances (no demo corpus found)"
    waves = []
    for path in paths:
        try:
            waves.append(audio.load(path, sample_rate=SAMPLE_RATE))
        except audio.AudioError as error:
            print(f"skipping {error}", file=sys.stderr)
    chunks = [mfcc_39(wav) for wav in waves if wav.numel() >= 400]
    frames = sum(chunk.shape[0] for chunk in chunks)
    original_frames = frames
    generator = torch.Generator().manual_seed(0)
    copy = 0
    while frames < num_frames:
        copy += 1
        for wav in waves:
            if frames >= num_frames:
                break
            chunk = mfcc_39(perturb(wav, copy, generator))
            chunks.append(chunk)
            frames += chunk.shape[0]
    if copy:
        source += (
            f"; {original_frames} original frames, padded to {frames} with {copy} "
            "perturbed pass(es) (speed 0.9-1.1, gain +-6 dB, 30 dB noise)"
        )
    if temporary:
        shutil.rmtree(temporary, ignore_errors=True)
    return torch.cat(chunks).numpy(), source


def neutral_inertia(frames64: np.ndarray, centers: np.ndarray) -> float:
    """Sum of squared Euclidean distances to the nearest center, float64, by scikit-learn."""
    _, distances = pairwise_distances_argmin_min(frames64, centers.astype(np.float64))
    return float(np.sum(distances**2))


def run_sklearn(frames: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    model = MiniBatchKMeans(
        n_clusters=n_clusters,
        init="k-means++",
        max_iter=100,
        batch_size=10000,
        verbose=0,
        compute_labels=False,
        tol=0.0,
        max_no_improvement=100,
        init_size=None,
        n_init=20,
        reassignment_ratio=0.0,
        random_state=seed,
    )
    model.fit(frames)
    return model.cluster_centers_


def run_ours(
    frames: np.ndarray, n_clusters: int, seed: int, device: str, tol: float = 1e-3
) -> np.ndarray:
    model = KMeans(n_clusters, device=device, seed=seed, tol=tol).fit(frames)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return model.cluster_centers_.cpu().numpy()


def timed(function, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    centers = function(*args)
    return time.perf_counter() - start, centers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="MFCC frames to cluster")
    parser.add_argument("--n-clusters", type=int, default=100, help="HuBERT iteration 1: 100")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each")
    parser.add_argument("--device", default="cpu", help="device for ours: cpu, cuda, auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for both (torch intra-op and sklearn's OpenMP/BLAS); default: all",
    )
    parser.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "speechssl_kmeans_mfcc.npy"),
        help="MFCC matrix cache (.npy); delete it to rebuild",
    )
    args = parser.parse_args()
    if args.threads is not None:
        # Same thread count for both: torch's intra-op pool and sklearn's OpenMP + BLAS pools.
        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)

    if os.path.isfile(args.cache) and np.load(args.cache, mmap_mode="r").shape[0] >= args.frames:
        frames = np.load(args.cache)
        source = f"cached {args.cache}"
    else:
        frames, source = build_frames(args.frames)
        np.save(args.cache, frames)
    frames = np.ascontiguousarray(frames[: args.frames], dtype=np.float32)
    frames64 = frames.astype(np.float64)
    print(f"data: {frames.shape[0]} frames x {frames.shape[1]} dims from {source}")
    print(f"torch threads: {torch.get_num_threads()}, ours on {args.device}, k = {args.n_clusters}")

    if torch.device(args.device).type == "cuda" or args.device == "auto":
        run_ours(frames[:20_000], args.n_clusters, 0, args.device)  # CUDA context + kernels warm-up

    runners = {
        "sklearn MiniBatchKMeans (fairseq)": lambda seed: timed(
            run_sklearn, frames, args.n_clusters, seed
        ),
        "speechssl KMeans (default, tol=1e-3)": lambda seed: timed(
            run_ours, frames, args.n_clusters, seed, args.device
        ),
        "speechssl KMeans (tol=1e-4)": lambda seed: timed(
            run_ours, frames, args.n_clusters, seed, args.device, 1e-4
        ),
    }
    results = {name: ([], []) for name in runners}
    for repeat in range(args.repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for name in order:
            seconds, centers = runners[name](repeat)
            inertia = neutral_inertia(frames64, centers)
            results[name][0].append(seconds)
            results[name][1].append(inertia)
            print(
                f"  repeat {repeat} {name}: {seconds:.2f} s, inertia/frame {inertia / len(frames):.3f}"
            )

    reference_name = "sklearn MiniBatchKMeans (fairseq)"
    reference_time = statistics.median(results[reference_name][0])
    reference_inertia = statistics.median(results[reference_name][1])
    print()
    print(
        "| method | median time (s) | median inertia / frame "
        "| time ratio (sklearn / this) | inertia ratio (this / sklearn) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (times, inertias) in results.items():
        median_time, median_inertia = statistics.median(times), statistics.median(inertias)
        print(
            f"| {name} | {median_time:.2f} | {median_inertia / len(frames):.3f} | "
            f"{reference_time / median_time:.1f}x | {median_inertia / reference_inertia:.4f} |"
        )


if __name__ == "__main__":
    main()
