"""Reading a corpus: file-per-utterance vs speechssl's shard stream vs webdataset itself.

Generates corpora under ``--root`` (never in the repository): real demo LibriSpeech
clips at 16 kHz, each utterance a pool variant with its own gain and start offset,
encoded as FLAC, written once as one file per utterance (+ a manifest) and once as
WebDataset shards of ``--shard-seconds`` (``speechssl shard``). Then, for every corpus
size, reader and page-cache state, a fresh subprocess reads until ``--audio-seconds``
of audio are decoded and reports its CPU seconds, wall seconds and peak RSS:

- ``files``: today's loader, ``make_loader`` (AudioDataset + DurationBucketSampler, a
  shuffled random read per utterance);
- ``shards``: ``make_shard_loader`` (ShardStream: shard order, block shuffle, batches);
- ``webdataset``: ``webdataset.WebDataset(urls).shuffle(1000)`` iterated directly, each
  sample decoded with soundfile (the peer's own reader, no batching).

Cold cache: before a cold run every corpus file (or shard) is evicted from the page
cache with ``posix_fadvise(POSIX_FADV_DONTNEED)`` (only our files; dropping the whole
cache would disturb other work on a shared machine). Runs interleave (the order
alternates per repeat); medians over repeats; ratios against ``files``.

    nice -n 5 python benchmarks/streaming.py --hours 50 10 --repeats 3 --audio-seconds 10000 | tee log
    python benchmarks/streaming.py --summarise log     # the table of a (part-way) log
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
READERS = ("files", "shards", "webdataset")
SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------- generate
def make_pool(count: int, seed: int = 0) -> list[tuple[bytes, float]]:
    """``count`` FLAC variants of demo clips: ``(bytes, seconds)`` each."""
    import soundfile

    from speechssl import audio
    from speechssl.data.prepare.common import audio_files
    from speechssl.demo import demo_path

    files = audio_files(demo_path("librispeech") / "train-clean-100", "**/*")
    clips = [audio.load(path, SAMPLE_RATE).numpy() for path in files[:60]]
    generator = np.random.default_rng(seed)
    pool = []
    for _ in range(count):
        clip = clips[generator.integers(len(clips))]
        offset = int(generator.integers(0, SAMPLE_RATE))  # up to 1 s cut off the start
        gain = float(generator.uniform(0.5, 1.5))
        wav = np.clip(clip[offset:] * gain, -1.0, 1.0)
        buffer = io.BytesIO()
        soundfile.write(buffer, wav, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        pool.append((buffer.getvalue(), len(wav) / SAMPLE_RATE))
    return pool


def generate(root: Path, hours: float, pool, shard_seconds: float, seed: int = 0) -> dict:
    """Files + manifest + shards of ``hours`` of audio under ``root``; timings."""
    from speechssl.data.compact import Manifest
    from speechssl.data.manifest import write_jsonl
    from speechssl.data.shards import write_shards

    if (root / "shards" / "index.json").is_file():
        return json.loads((root / "generation.json").read_text())
    start, cpu = time.perf_counter(), time.process_time()
    generator = np.random.default_rng(seed)
    rows, total = [], 0.0
    while total < hours * 3600:
        data, seconds = pool[generator.integers(len(pool))]
        number = len(rows)
        path = root / "files" / f"{number // 1000:04d}" / f"utt{number:07d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(
            {
                "id": f"utt{number:07d}",
                "audio": str(path),
                "duration": seconds,
                "sample_rate": SAMPLE_RATE,
                "speaker": f"spk{number % 500}",
            }
        )
        total += seconds
    write_jsonl(root / "train.jsonl", rows)
    files_done = time.perf_counter()
    write_shards(Manifest.from_rows(rows), root / "shards", shard_seconds=shard_seconds)
    timing = {
        "hours": total / 3600,
        "utterances": len(rows),
        "files_wall_s": files_done - start,
        "shards_wall_s": time.perf_counter() - files_done,
        "cpu_s": time.process_time() - cpu,
        "bytes": sum(p.stat().st_size for p in (root / "shards").glob("*.tar")),
    }
    (root / "generation.json").write_text(json.dumps(timing))
    return timing


# ----------------------------------------------------------------------------- measure
def evict(paths) -> None:
    """Drop ``paths`` from the page cache (clean pages only; ours were written long ago)."""
    for path in paths:
        with open(path, "rb") as file:
            os.fsync(file.fileno())
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def warm(paths) -> None:
    for path in paths:
        with open(path, "rb") as file:
            while file.read(1 << 22):
                pass


def corpus_paths(root: Path, reader: str) -> list[Path]:
    if reader == "files":
        return sorted((root / "files").glob("*/*.flac"))
    return sorted((root / "shards").glob("*.tar"))


def measure(reader: str, root: Path, audio_seconds: float) -> dict:
    """Read ``root`` with ``reader`` until ``audio_seconds`` are decoded (in this process)."""
    import soundfile
    import torch

    from speechssl.data.loaders import DataConfig, load_manifests, make_loader
    from speechssl.data.shards import make_shard_loader

    torch.set_num_threads(1)
    baseline = _status_kb("VmRSS")  # the interpreter, torch and speechssl imported
    config = DataConfig(max_batch_seconds=80.0, max_duration=15.0, num_workers=0)
    start, cpu = time.perf_counter(), time.process_time()
    if reader == "files":
        batches = iter(make_loader(load_manifests([root / "train.jsonl"]), config, seed=1))
    elif reader == "shards":
        batches = iter(make_shard_loader([root / "shards"], config, seed=1))
    else:
        import webdataset

        urls = [str(path) for path in corpus_paths(root, "shards")]
        samples = webdataset.WebDataset(urls, shardshuffle=len(urls), empty_check=False)
        samples = samples.shuffle(1000)
        batches = (
            soundfile.read(io.BytesIO(sample["flac"]), dtype="float32")[0] for sample in samples
        )
    setup = time.perf_counter() - start
    decoded = 0.0
    for batch in batches:
        lengths = batch.lengths.sum().item() if hasattr(batch, "lengths") else len(batch)
        decoded += lengths / SAMPLE_RATE
        if decoded >= audio_seconds:
            break
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "audio_s": decoded,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - start,
        "setup_s": setup,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "rss_over_imports_mb": (_status_kb("VmHWM") - baseline) / 1024,
    }


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key))


def coverage(root: Path, ranks: int, workers: int) -> dict:
    """Plan one epoch over ``ranks x workers`` readers from the index alone: every sample
    exactly once, equal batch counts, and the planning time (what each process pays at
    each epoch start)."""
    from speechssl.data.shards import ShardStream

    options = {"max_batch_seconds": 80.0, "max_duration": 15.0, "num_workers": workers}
    start = time.process_time()
    plans = ShardStream([root / "shards"], num_replicas=ranks, rank=0, **options).plan(0)
    plan_cpu = time.process_time() - start
    numbers = np.concatenate([b for p in plans for block in p.blocks for b in block])
    return {
        "readers": f"{ranks} x {workers}",
        "samples": len(numbers),
        "each once": bool(np.array_equal(np.sort(numbers), np.arange(len(numbers)))),
        "batches per reader": sorted({p.num_batches for p in plans}),
        "plan CPU s": round(plan_cpu, 2),
    }


def run_child(reader: str, root: Path, audio_seconds: float, cold: bool) -> dict:
    paths = corpus_paths(root, reader)
    (evict if cold else warm)(paths)
    command = [sys.executable, __file__, "--child", reader, str(root), str(audio_seconds)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary_rows(results: dict[tuple, list[dict]], hours_of: dict[float, float]) -> list[dict]:
    """Medians over the repeats of each (corpus, cache, reader), and ratios to ``files``."""
    rows = []
    for (hours, cold, reader), outcomes in sorted(
        results.items(), key=lambda item: (-item[0][0], item[0][1], READERS.index(item[0][2]))
    ):

        def median(key, outcomes=outcomes):
            return statistics.median(outcome[key] for outcome in outcomes)

        base = results[hours, cold, "files"]
        base_rate = statistics.median(o["audio_s"] / o["cpu_s"] for o in base)
        base_wall = statistics.median(o["audio_s"] / o["wall_s"] for o in base)
        rate = statistics.median(o["audio_s"] / o["cpu_s"] for o in outcomes)
        wall_rate = statistics.median(o["audio_s"] / o["wall_s"] for o in outcomes)
        rows.append(
            {
                "corpus h": f"{hours_of[hours]:.1f}",
                "cache": "cold" if cold else "warm",
                "reader": reader,
                "runs": len(outcomes),
                "audio-s / CPU-s": f"{rate:.0f}",
                "x files (CPU)": f"{rate / base_rate:.2f}",
                "audio-s / wall-s": f"{wall_rate:.0f}",
                "x files (wall)": f"{wall_rate / base_wall:.2f}",
                "peak RSS MB": f"{median('peak_rss_mb'):.0f}",
                "RSS over imports MB": f"{median('rss_over_imports_mb'):.0f}",
                "setup s": f"{median('setup_s'):.2f}",
            }
        )
    return rows


def summarise_log(path: str) -> None:
    """The table of a log this script printed (also of a run stopped part-way)."""
    from common import markdown_table

    results: dict[tuple, list[dict]] = {}
    hours_of = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] in ("warm", "cold") and parts[2] in READERS:
            key = (float(parts[0]), parts[1] == "cold", parts[2])
            results.setdefault(key, []).append(json.loads(parts[3]))
        elif " h corpus: " in line:
            hours, generation = line.split(" h corpus: ")
            hours_of[float(hours)] = json.loads(generation)["hours"]
    complete = {
        key: value for key, value in results.items() if (key[0], key[1], "files") in results
    }
    print(markdown_table(summary_rows(complete, hours_of)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]))))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--summarise":
        summarise_log(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, nargs="+", default=[10.0, 2.0])
    parser.add_argument("--root", default="/tmp/speechssl_streaming")
    parser.add_argument("--audio-seconds", type=float, default=3600.0)
    parser.add_argument("--shard-seconds", type=float, default=3600.0)
    parser.add_argument("--pool", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from common import markdown_table

    root = Path(args.root)
    cpu = time.process_time()
    start = time.perf_counter()
    pool = make_pool(args.pool)
    pool_seconds = sum(seconds for _, seconds in pool)
    print(
        f"pool: {args.pool} FLAC variants, {pool_seconds / 3600:.2f} h, made in "
        f"{time.perf_counter() - start:.1f} s"
    )
    generation = {}
    for hours in args.hours:
        generation[hours] = generate(root / f"{hours:g}h", hours, pool, args.shard_seconds)
        print(f"{hours:g} h corpus: {json.dumps(generation[hours])}")
    for hours in args.hours:
        for ranks, workers in ((2, 2), (4, 2)):
            print(f"{hours:g} h plan: {json.dumps(coverage(root / f'{hours:g}h', ranks, workers))}")
    results: dict[tuple, list[dict]] = {}
    for repeat in range(args.repeats):
        for hours in args.hours:
            for cold in (False, True):
                order = READERS if repeat % 2 == 0 else tuple(reversed(READERS))
                for reader in order:
                    outcome = run_child(reader, root / f"{hours:g}h", args.audio_seconds, cold)
                    results.setdefault((hours, cold, reader), []).append(outcome)
                    print(hours, "cold" if cold else "warm", reader, json.dumps(outcome))
    rows = summary_rows(results, {h: g["hours"] for h, g in generation.items()})
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total_cpu = time.process_time() - cpu + children.ru_utime + children.ru_stime
    print()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"load {os.getloadavg()[0]:.1f}; {args.repeats} repeats, {args.audio_seconds:g} "
        f"audio-s decoded per run; total benchmark CPU {total_cpu:.0f} s (with the readers' "
        f"subprocesses), wall {time.perf_counter() - start:.0f} s"
    )
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
