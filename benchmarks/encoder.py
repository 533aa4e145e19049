"""Our wav2vec 2.0 / HuBERT encoder vs torchaudio's, forward + backward, same weights.

Both models hold identical weights (``speechssl.encoders.wav2vec2.convert.to_torchaudio``), run in training
mode on the same batch with layer drop off, interleaved repeat by repeat; the table gives
median step times, their ratio, and the peak memory a step adds (CPU: the child process's
peak RSS increase; GPU: ``torch.cuda.max_memory_allocated``). On a GPU with ``--dtype
bfloat16`` it also reports output frames per second and model FLOPs utilisation (MFU).
On a CPU it also gives the process's CPU seconds per step, steadier on a shared machine,
and a roofline: each step's FLOPs per CPU second as a share of this machine's float32
matrix-multiply rate, and the lowest ours/torchaudio ratio that share leaves possible
(the step at 100 % of that rate).

    python benchmarks/encoder.py --sizes tiny base --batch 2 --seconds 2 --repeats 5
    python benchmarks/encoder.py --device cuda --dtype bfloat16 --batch 8 --seconds 15
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time

import torch
from common import interleave, load_average, markdown_table, peak_bf16_flops

from speechssl.encoders import build_encoder
from speechssl.encoders.wav2vec2.convert import to_torchaudio

PRESET = {"tiny": "hubert_tiny", "base": "hubert_base", "large": "hubert_large"}


def build_pair(size: str):
    torch.manual_seed(0)
    ours = build_encoder(PRESET[size], layer_drop=0.0)
    theirs = to_torchaudio(ours)
    return ours, theirs


def step_ours(model, wav, lengths):
    return model(wav, lengths).last_hidden_state


def step_theirs(model, wav, lengths):
    return model(wav, lengths)[0]


def one_step(model, run, wav, lengths, dtype, device):
    model.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
        output = run(model, wav, lengths)
    output.float().pow(2).mean().backward()
    return output.shape[1]


def sgemm_peak_flops(repeats: int = 7, size: int = 1536) -> float:
    """This CPU's float32 matrix-multiply rate (FLOP per CPU-second) at the current threads.

    The roofline for a step made of matrix products: no implementation of the same
    architecture in float32 can run faster than its FLOPs at this rate.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        times.append(time.process_time() - start)
    return 2 * size**3 / statistics.median(times)


def forward_flops(encoder, num_samples: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one forward pass over one utterance."""
    config = encoder.config
    flops, length, in_channels = 0.0, num_samples, 1
    for channels, kernel, stride in zip(
        config.conv_channels, config.conv_kernels, config.conv_strides
    ):
        length = (length - kernel) // stride + 1
        flops += 2 * in_channels * kernel * channels * length
        in_channels = channels
    frames, width = length, config.embed_dim
    flops += 2 * in_channels * width * frames  # projection
    flops += 2 * width * (width // config.pos_conv_groups) * config.pos_conv_kernel * frames
    per_layer = (
        2 * frames * (4 * width * width + 2 * width * config.ffn_dim) + 4 * frames * frames * width
    )
    return flops + config.num_layers * per_layer


def measure_memory(args, size: str, which: str) -> float:
    """Peak resident-memory increase (MiB) of one training step, in a fresh child process."""
    command = [
        sys.executable,
        __file__,
        "--child",
        which,
        "--sizes",
        size,
        "--batch",
        str(args.batch),
        "--seconds",
        str(args.seconds),
        "--threads",
        str(args.threads),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(args) -> None:
    torch.set_num_threads(args.threads)
    ours, theirs = build_pair(args.sizes[0])
    model, run = (ours, step_ours) if args.child == "ours" else (theirs, step_theirs)
    del ours, theirs
    gc.collect()
    wav = torch.randn(args.batch, int(args.seconds * 16000))
    lengths = torch.full((args.batch,), wav.shape[1])
    lengths[1:] = (lengths[1:] * 0.8).long()
    model.train()
    # reset the resident-set high-water mark (Linux), so the step's own peak is measured
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = _status_mib("VmRSS")
    one_step(model, run, wav, lengths, torch.float32, torch.device("cpu"))
    print(json.dumps({"peak_mib": _status_mib("VmHWM") - before}))


def benchmark(args, size: str) -> dict:
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    ours, theirs = build_pair(size)
    ours, theirs = ours.to(device).train(), theirs.to(device).train()
    runs = {"ours": (ours, step_ours), "torchaudio": (theirs, step_theirs)}
    if args.compile:
        runs["ours+compile"] = (torch.compile(ours), step_ours)
    generator = torch.Generator().manual_seed(0)
    wav = torch.randn(args.batch, int(args.seconds * 16000), generator=generator).to(device)
    lengths = torch.full((args.batch,), wav.shape[1], device=device)
    lengths[1:] = (lengths[1:] * 0.8).long()  # a padded batch, as training sees
    timings = interleave(
        {
            name: (lambda model=model, run=run: one_step(model, run, wav, lengths, dtype, device))
            for name, (model, run) in runs.items()
        },
        repeats=args.repeats,
        device=device,
    )
    frames = timings["ours"].result
    times = {name: timing.wall for name, timing in timings.items()}
    cpu_times = {name: timing.cpu for name, timing in timings.items()}
    medians = {name: statistics.median(values) for name, values in times.items()}
    row = {
        "size": size,
        "device": args.device,
        "dtype": args.dtype,
        "batch": f"{args.batch} x {args.seconds:g} s",
    }
    for name, value in medians.items():
        row[f"{name} (s)"] = round(value, 4)
    row["ours / torchaudio"] = round(medians["ours"] / medians["torchaudio"], 3)
    if args.compile:
        row["compiled / eager"] = round(medians["ours+compile"] / medians["ours"], 3)
    if device.type == "cpu":
        # CPU seconds of this process: steadier than wall time on a shared machine
        cpu_medians = {name: statistics.median(values) for name, values in cpu_times.items()}
        for name, value in cpu_medians.items():
            row[f"{name} CPU (s)"] = round(value, 4)
        row["CPU ratio"] = round(cpu_medians["ours"] / cpu_medians["torchaudio"], 3)
        if args.compile:
            row["compiled / eager, CPU"] = round(
                cpu_medians["ours+compile"] / cpu_medians["ours"], 3
            )
        # roofline: the step's FLOPs at this machine's SGEMM rate, per CPU second
        step_flops = 3 * args.batch * forward_flops(ours, wav.shape[1])  # fwd + 2x for bwd
        peak = sgemm_peak_flops()
        for name in ("ours", "torchaudio"):
            row[f"{name} % of SGEMM peak"] = f"{100 * step_flops / cpu_medians[name] / peak:.0f}%"
        row["ratio floor"] = round(step_flops / peak / cpu_medians["torchaudio"], 3)
    if device.type == "cuda":
        for name, (model, run) in runs.items():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            one_step(model, run, wav, lengths, dtype, device)
            row[f"{name} peak (MiB)"] = round((torch.cuda.max_memory_allocated() - base) / 2**20)
        step_flops = 3 * args.batch * forward_flops(ours, wav.shape[1])  # fwd + 2x for bwd
        row["frames/s (ours)"] = round(args.batch * frames / medians["ours"])
        peak = peak_bf16_flops(torch.cuda.get_device_name())
        if peak is not None and dtype == torch.bfloat16:
            row["MFU (ours)"] = f"{100 * step_flops / medians['ours'] / peak:.1f}%"
            row["MFU (torchaudio)"] = f"{100 * step_flops / medians['torchaudio'] / peak:.1f}%"
    elif args.memory:
        row["ours peak (MiB)"] = round(measure_memory(args, size, "ours"))
        row["torchaudio peak (MiB)"] = round(measure_memory(args, size, "torchaudio"))
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=sorted(PRESET))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile(ours) (inductor), interleaved with eager",
    )
    parser.add_argument(
        "--memory", action="store_true", help="CPU: peak RSS per step (child processes)"
    )
    parser.add_argument("--child", choices=["ours", "torchaudio"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)
    print(f"load average before: {load_average()}")
    rows = [benchmark(args, size) for size in args.sizes]
    print(markdown_table(rows))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
