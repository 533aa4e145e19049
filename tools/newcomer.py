"""Time a newcomer's first hour on the demo: each step a user would run first, in order.

Steps (each a fresh process, as a user types them; installation aside):

1. ``speechssl --help``
2. the fine-tune demo, ``python recipes/finetune/run.py run_dir=OUT/finetune``
3. ``speechssl evaluate fbank --task speaker-id`` on the demo VoxCeleb1 set
4. ``speechssl predict OUT/finetune <the demo's Session5 clips>``
5. ``speechssl export OUT/finetune OUT/export --format onnx`` (encoder + classifier)
6. the README's encoder snippet ("Use an encoder in another project"), extracted and run

For each it records the wall time, the CPU time of the process and its children (user +
system), the exit code and the load average at the start, and writes
``OUT/newcomer.json`` and a Markdown table (printed). A step that fails is recorded and
the next ones still run (a later step that needs it fails too, and says so).

Example:
    nice -n 5 python tools/newcomer.py --out /tmp/newcomer
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The first Python block of the README's "Use an encoder in another project"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Use an encoder in another project\n")
    return re.search(r"```python\n(.*?)```", text[start:], re.DOTALL).group(1)


def steps(out: Path) -> list[tuple[str, list[str]]]:
    """``(name, argv)`` of each step, in the order a newcomer runs them."""
    speechssl = [sys.executable, "-m", "speechssl.cli"]
    demo = ROOT / "speechssl" / "demo_data"
    clips = sorted(glob.glob(str(demo / "IEMOCAP_full_release/Session5/sentences/wav/*/*")))
    finetune = out / "finetune"
    return [
        ("speechssl --help", [*speechssl, "--help"]),
        (
            "fine-tune demo (recipes/finetune/run.py)",
            [sys.executable, str(ROOT / "recipes/finetune/run.py"), f"run_dir={finetune}"],
        ),
        (
            "speechssl evaluate fbank --task speaker-id (demo VoxCeleb1)",
            [
                *speechssl,
                "evaluate",
                "fbank",
                "--task",
                "speaker-id",
                "--data",
                str(demo / "VoxCeleb1"),
                "--out",
                str(out / "evaluate"),
            ],
        ),
        (
            f"speechssl predict ({len(clips)} Session5 clips)",
            [*speechssl, "predict", str(finetune), *clips],
        ),
        (
            "speechssl export --format onnx (fine-tuned run)",
            [*speechssl, "export", str(finetune), str(out / "export"), "--format", "onnx"],
        ),
        ("README encoder snippet", [sys.executable, "-c", readme_snippet()]),
    ]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(name: str, argv: list[str], log: Path) -> dict:
    """Run one step, its output into ``log``; its wall and CPU seconds and exit code."""
    load = os.getloadavg()[0]
    cpu, start = children_cpu_seconds(), time.perf_counter()
    with open(log, "w", encoding="utf-8") as output:
        code = subprocess.call(argv, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - start
    return {
        "step": name,
        "command": shlex.join(argv) if len(argv) < 12 else shlex.join(argv[:11]) + " ...",
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(children_cpu_seconds() - cpu, 1),
        "load_average_at_start": round(load, 2),
        "log": str(log),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| step | wall (s) | CPU (s) | load at start | exit |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['step']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} "
            f"| {row['load_average_at_start']:.1f} | {row['exit_code']} |"
        )
    total_wall = sum(row["wall_s"] for row in rows)
    total_cpu = sum(row["cpu_s"] for row in rows)
    lines.append(f"| **total** | {total_wall:.1f} | {total_cpu:.1f} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/newcomer", help="output folder (made fresh runs)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    if out.exists() and any(out.iterdir()):
        print(f"newcomer: error: {out} is not empty (the steps must start fresh)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ}
    rows = []
    for index, (name, command) in enumerate(steps(out), start=1):
        row = run_step(name, command, out / f"step{index}.log")
        rows.append(row)
        print(
            f"{name}: {row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU, exit {row['exit_code']}"
        )
    report = {
        "machine": f"{platform.node()} {os.cpu_count()} CPUs, {platform.platform()}",
        "nice": os.nice(0),
        "pythonpath": environment.get("PYTHONPATH", ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "steps": rows,
    }
    (out / "newcomer.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + table(rows))
    return 0 if all(row["exit_code"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
