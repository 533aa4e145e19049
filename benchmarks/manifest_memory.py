"""Memory of loading a large JSONL manifest: compact arrays vs Python objects per row.

Writes a synthetic LibriSpeech-style manifest (default 10 million lines) to a temporary
folder, then loads it in a fresh subprocess per loader and reports the peak resident set
size above the interpreter's baseline, what stays resident once loading is done, and the
load time:

- ``compact``: :class:`speechssl.data.compact.Manifest` (byte buffers + int/float arrays);
- ``compact-npz``: the same, read from the ``.npz`` cache ``Manifest.save`` wrote;
- ``fairseq-style``: a list of path strings and a list of int sizes, as fairseq's HuBERT
  dataset keeps them (plus the speaker strings a speaker-aware recipe needs);
- ``list-of-dicts``: every parsed row kept as a dict.

Usage:
    python benchmarks/manifest_memory.py                   # 10M lines
    python benchmarks/manifest_memory.py --lines 2000000   # quicker
    python benchmarks/manifest_memory.py --tracemalloc     # also Python-heap peaks (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

LOADERS = ("compact", "compact-npz", "fairseq-style", "list-of-dicts")


def write_manifest(path: str, num_lines: int, seed: int = 0) -> None:
    """LibriSpeech-like rows: 2,500 speakers x chapters, durations 1-35 s."""
    import numpy as np

    generator = np.random.default_rng(seed)
    durations = np.clip(generator.gamma(4.0, 3.2, size=num_lines), 1.0, 35.0).round(3)
    with open(path, "w", encoding="utf-8") as file:
        for line in range(num_lines):
            speaker, chapter, utterance = line // 4000, (line // 100) % 40 + 100, line % 100
            name = f"{speaker}-{chapter}-{utterance:04d}"
            row = {
                "id": name,
                "audio": f"/data/corpora/LibriSpeech/train-960/{speaker}/{chapter}/{name}.flac",
                "duration": float(durations[line]),
                "sample_rate": 16000,
                "speaker": str(speaker),
            }
            file.write(json.dumps(row) + "\n")


def _resident_kib() -> int:
    """Current resident set size in KiB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _load(kind: str, path: str):
    from speechssl.data.compact import Manifest
    from speechssl.data.manifest import read_jsonl

    if kind == "compact":
        return Manifest.from_jsonl(path)
    if kind == "compact-npz":
        return Manifest.load(path + ".npz")  # the cache the "compact" run saved
    if kind == "fairseq-style":
        names, sizes, speakers = [], [], []
        for row in read_jsonl(path, skipped=[]):
            names.append(row["audio"])
            sizes.append(int(row["duration"] * row["sample_rate"]))
            speakers.append(row["speaker"])
        return names, sizes, speakers
    return list(read_jsonl(path, skipped=[]))


def measure(kind: str, path: str, use_tracemalloc: bool) -> dict:
    """Run in the child: load once and report memory figures as JSON."""
    import gc
    import resource
    import tracemalloc

    import numpy  # noqa: F401  (imported before the baseline so it is not counted)

    import speechssl.data.compact  # noqa: F401

    gc.collect()
    baseline = _resident_kib()
    if use_tracemalloc:
        tracemalloc.start()
    start = time.perf_counter()
    loaded = _load(kind, path)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
    if use_tracemalloc:
        tracemalloc.stop()
    gc.collect()
    retained = _resident_kib() - baseline
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline  # KiB on Linux
    count = len(loaded) if not isinstance(loaded, tuple) else len(loaded[0])
    if kind == "compact":
        loaded.save(path + ".npz")  # after the measurement, for the compact-npz run
    return {
        "kind": kind,
        "rows": count,
        "seconds": seconds,
        "peak_mib": peak / 1024,
        "retained_mib": retained / 1024,
        "traced_peak_mib": None if traced_peak is None else traced_peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.tracemalloc)))
        return

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "train.jsonl")
        start = time.perf_counter()
        write_manifest(path, args.lines)
        size = os.path.getsize(path)
        print(
            f"wrote {args.lines:,} lines ({size / 2**20:,.0f} MiB) in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
        results = []
        for kind in args.loaders:
            command = [sys.executable, __file__, "--child", kind, path]
            command += ["--tracemalloc"] if args.tracemalloc else []
            output = subprocess.run(command, check=False, capture_output=True, text=True)
            if output.returncode != 0:
                print(f"{kind}: failed (exit {output.returncode}) {output.stderr[-300:]}")
                continue
            results.append(json.loads(output.stdout.strip().splitlines()[-1]))
            print(f"  {kind}: done in {results[-1]['seconds']:.0f} s", flush=True)

    compact = next((r for r in results if r["kind"] == "compact"), None)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    header = (
        "| loader | rows | load s | peak RSS MiB | retained MiB | bytes/row | peak vs compact |"
    )
    if args.tracemalloc:
        header += " tracemalloc peak MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for result in results:
        ratio = result["peak_mib"] / compact["peak_mib"] if compact else float("nan")
        line = (
            f"| {result['kind']} | {result['rows']:,} | {result['seconds']:.1f} | "
            f"{result['peak_mib']:,.0f} | {result['retained_mib']:,.0f} | "
            f"{result['retained_mib'] * 2**20 / max(result['rows'], 1):.0f} | {ratio:.1f}x |"
        )
        if args.tracemalloc:
            line += f" {result['traced_peak_mib']:,.0f} |"
        print(line)


if __name__ == "__main__":
    main()
