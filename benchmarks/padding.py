"""Padding waste and budget use of DurationBucketSampler against unbucketed batching.

For a set of durations (the demo corpus, or synthetic LibriSpeech-like ones), prints per
batching scheme: batches per epoch, the fraction of padded samples, the mean fraction of
``max_batch_seconds`` a batch fills, and the time to plan one epoch.

- ``random``: shuffled utterances packed greedily up to the same padded budget (what a
  plain shuffled loader with a dynamic batch size gets);
- ``ours-<K>``: DurationBucketSampler with K buckets.

Usage:
    python benchmarks/padding.py                         # synthetic, 100k utterances
    python benchmarks/padding.py --utterances 10000000   # epoch-planning time at 10M
    python benchmarks/padding.py --demo                  # speechssl/demo_data LibriSpeech
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from speechssl import audio
from speechssl.data.prepare.common import audio_files
from speechssl.data.sampler import DurationBucketSampler, padding_waste

DEMO_ROOT = Path(__file__).parents[1] / "speechssl" / "demo_data" / "LibriSpeech"


def random_greedy_batches(durations: np.ndarray, max_batch_seconds: float, seed: int = 0):
    """Shuffle, then add utterances to a batch while ``B * longest`` fits the budget."""
    batches, batch, longest = [], [], 0.0
    for index in np.random.default_rng(seed).permutation(len(durations)).tolist():
        new_longest = max(longest, float(durations[index]))
        if batch and (len(batch) + 1) * new_longest > max_batch_seconds:
            batches.append(batch)
            batch, new_longest = [], float(durations[index])
        batch.append(index)
        longest = new_longest
    return batches + ([batch] if batch else [])


def budget_use(durations: np.ndarray, batches, max_batch_seconds: float) -> float:
    used = [len(b) * float(durations[np.asarray(b)].max()) for b in batches]
    return float(np.mean(used)) / max_batch_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=100_000)
    parser.add_argument("--max-batch-seconds", type=float, default=300.0)
    parser.add_argument("--demo", action="store_true", help="use the demo corpus durations")
    args = parser.parse_args()
    if args.demo:
        paths = audio_files(DEMO_ROOT, "**/*")
        durations = np.array([audio.info(p).duration for p in paths], dtype=np.float32)
        source = f"demo corpus ({len(durations)} utterances)"
    else:
        generator = np.random.default_rng(0)
        durations = generator.gamma(4.0, 3.2, size=args.utterances).clip(1.0, 35.0)
        durations = durations.astype(np.float32)
        source = f"synthetic LibriSpeech-like ({len(durations):,} utterances, 1-35 s)"
    print(f"{source}, max_batch_seconds={args.max_batch_seconds}")
    print("| batching | batches | padding waste | budget use | plan s |")
    print("|---|---|---|---|---|")
    if len(durations) <= 1_000_000:
        start = time.perf_counter()
        batches = random_greedy_batches(durations, args.max_batch_seconds)
        seconds = time.perf_counter() - start
        print(
            f"| random | {len(batches):,} | {padding_waste(durations, batches):.3f} | "
            f"{budget_use(durations, batches, args.max_batch_seconds):.2f} | {seconds:.2f} |"
        )
    for num_buckets in (5, 10, 20, 40, 80):
        start = time.perf_counter()
        sampler = DurationBucketSampler(durations, args.max_batch_seconds, num_buckets=num_buckets)
        batches = sampler.global_batches()
        seconds = time.perf_counter() - start
        print(
            f"| ours-{num_buckets} | {len(batches):,} | {sampler.padding_waste():.3f} | "
            f"{budget_use(durations, batches, args.max_batch_seconds):.2f} | {seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
