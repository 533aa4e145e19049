"""Timing, memory and reporting helpers shared by the benchmark scripts.

One place for what every script does alike: run the compared steps interleaved (the order
alternates each repeat, so background load and drift hit all of them alike) and keep wall
and process-CPU times; measure a step's peak memory on a GPU or a CPU; look up a GPU's
peak bf16 rate for MFU; print a Markdown table.

    >>> import torch
    >>> times = interleave({"a": lambda: 1, "b": lambda: 2}, repeats=3, device=torch.device("cpu"))
    >>> sorted(times), len(times["a"].wall)
    (['a', 'b'], 3)
"""

from __future__ import annotations

import ctypes
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Dense (no sparsity) bf16 tensor-core peak FLOP/s by device-name fragment, for MFU.
# Checked in this order, so the specific "H100 PCIe" comes before the generic "H100" (SXM).
PEAK_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
}


def peak_bf16_flops(device_name: str) -> float | None:
    """The peak bf16 FLOP/s of a GPU named ``device_name`` (None when not in the table)."""
    return next((value for key, value in PEAK_BF16.items() if key in device_name), None)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer read after it sees the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def device_description(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                model,
            )
    return f"{model}, {torch.get_num_threads()} threads"


@dataclass
class Timings:
    """Per-repeat seconds of one step: wall clock and this process's CPU time."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    result: object = None  # what the last call returned (a loss, a frame count)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def interleave(
    steps: dict[str, Callable[[], object]],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    deadline: float | None = None,
) -> dict[str, Timings]:
    """Time each step ``repeats`` times, interleaved, after ``warmup`` untimed rounds.

    The order alternates each repeat. ``deadline`` (a ``time.perf_counter()`` value) stops
    after the first complete round past it, so a time budget holds; every step then has
    the same number of timings (at least one).
    """
    timings = {name: Timings() for name in steps}
    for _ in range(warmup):  # caches, allocator, CUDA context, compilation
        for name, step in steps.items():
            timings[name].result = step()
    synchronize(device)
    for repeat in range(repeats):
        order = list(steps) if repeat % 2 == 0 else list(reversed(steps))
        for name in order:
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            timings[name].result = steps[name]()
            synchronize(device)
            timings[name].wall.append(time.perf_counter() - start)
            timings[name].cpu.append(time.process_time() - cpu_start)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return timings


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or the CPU process's VmHWM rise.

    On a CPU it resets the peak resident set through ``/proc/self/clear_refs`` (Linux)
    after ``malloc_trim``, and makes glibc return big buffers to the OS on free: measure
    memory in steps of its own, after the timed ones, since re-faulting those pages slows
    every later step.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.libc = None
        self.base = 0
        if device.type == "cpu" and os.path.exists("/proc/self/clear_refs"):
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: big buffers go back on free

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.libc is not None:
            self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset the peak resident set to the current one
            self.base = self._status("VmRSS")

    def stop(self) -> float:
        """Peak extra bytes since ``start`` (NaN where it cannot be measured)."""
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device) - self.base)
        if self.libc is not None:
            return float(self._status("VmHWM") - self.base)
        return float("nan")


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of ``rows``; the columns are the keys in order of first appearance."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines)
