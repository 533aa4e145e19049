"""Benchmark: speechssl's ``strided_conv1d`` against ``F.conv1d`` (oneDNN) on a CPU.

The wav2vec 2.0 extractor's six 512-channel strided convolutions (kernel 3 stride 2 four
times, kernel 2 stride 2 twice) on the output of its first layer for a batch of
utterances, in training mode. Two rows, each timed for ours and for the peer in one
process on the same tensors, interleaved, medians of the process CPU time:

- the weight gradient of the first 512-channel layer alone (oneDNN:
  ``convolution_backward`` asked for the weight gradient only; ours: one matmul per tap);
- the six layers with GELU, forward + backward (what a training step runs).

    python benchmarks/strided_conv.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from speechssl.encoders.strided_conv import strided_conv1d

LAYERS = [(3, 2)] * 4 + [(2, 2)] * 2  # (kernel, stride) of wav2vec 2.0 blocks 2-7
CHANNELS = 512


def stack(conv, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    for weight, (_, stride) in zip(weights, LAYERS):
        x = F.gelu(conv(x, weight, None, stride))
    return x


def stock_conv(x, weight, bias, stride):
    return F.conv1d(x, weight, bias, stride=stride)


def cpu_seconds(function) -> float:
    start = time.process_time()
    function()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per utterance")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # the first block (kernel 10, stride 5) turns 16 kHz audio into 3,200 frames per second
    frames = (int(args.seconds * 16000) - 10) // 5 + 1
    x = torch.randn(args.batch_size, CHANNELS, frames, requires_grad=True)
    weights = [
        (torch.randn(CHANNELS, CHANNELS, kernel) * 0.02).requires_grad_() for kernel, _ in LAYERS
    ]
    first = weights[0].detach()
    grad_output = torch.randn_like(F.conv1d(x.detach(), first, stride=2))

    def weight_grad_stock():
        torch.ops.aten.convolution_backward(
            grad_output, x.detach(), first, [0], [2], [0], [1], False, [0], 1,
            [False, True, False],
        )  # fmt: skip

    def weight_grad_ours():
        inputs = (x.detach(), first.clone().requires_grad_())
        output = strided_conv1d(inputs[0], inputs[1], None, 2)
        torch.autograd.grad(output, inputs[1], grad_output)

    def weight_grad_ours_forward_only():
        strided_conv1d(x.detach(), first, None, 2)

    def training(conv):
        def run():
            for weight in weights:
                weight.grad = None
            x.grad = None
            stack(conv, x, weights).pow(2).mean().backward()

        return run

    rows = {
        "weight gradient, first 512-ch layer": {
            "F.conv1d (oneDNN)": weight_grad_stock,
            "strided_conv1d": weight_grad_ours,
            # ours above also runs the forward pass; timed alone to subtract it
            "(strided_conv1d forward)": weight_grad_ours_forward_only,
        },
        "six 512-ch layers + GELU, forward + backward": {
            "F.conv1d (oneDNN)": training(stock_conv),
            "strided_conv1d": training(strided_conv1d),
        },
    }
    print(
        f"batch {args.batch_size} x {args.seconds:g} s ({frames} frames into block 2), "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats, "
        f"torch {torch.__version__}\n"
    )
    print("| what | F.conv1d (oneDNN) CPU s | strided_conv1d CPU s | ours / oneDNN |")
    print("| --- | ---: | ---: | ---: |")
    for what, runs in rows.items():
        times = {name: [] for name in runs}
        for function in runs.values():  # warm-up
            function()
        for _ in range(args.repeats):
            for name, function in runs.items():
                times[name].append(cpu_seconds(function))
        medians = {name: statistics.median(values) for name, values in times.items()}
        ours = medians["strided_conv1d"] - medians.get("(strided_conv1d forward)", 0.0)
        stock = medians["F.conv1d (oneDNN)"]
        print(f"| {what} | {stock:.3f} | {ours:.3f} | {ours / stock:.2f}x |")


if __name__ == "__main__":
    main()
