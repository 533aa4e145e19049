"""onnxruntime (CPU) vs PyTorch eager: inference latency of one exported encoder.

The encoder (``hubert_base`` by default, random weights) is exported with
``speechssl.encoders.onnx_export.export_onnx``; both run the same batch of ``--seconds`` of
audio, interleaved call by call in one process with the same thread count, after warm-up
calls. The table gives the median latency of each, their ratio (onnxruntime / PyTorch,
below 1 means onnxruntime is faster), and the largest output difference.

    python benchmarks/onnx_latency.py --preset hubert_base --seconds 10 --repeats 10 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from speechssl.encoders import build_encoder
from speechssl.encoders.onnx_export import ONNX_NAME, EncoderGraph, export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="hubert_base")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = build_encoder(args.preset).eval()
    graph = EncoderGraph(encoder).eval()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        spec = encoder.spec()
        export_onnx(graph, folder, family=spec["family"], config=spec["config"])
        export_seconds = time.perf_counter() - started
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(Path(folder) / ONNX_NAME), options, providers=["CPUExecutionProvider"]
        )

    samples = int(args.seconds * 16000)
    wav = torch.randn(args.batch, samples, generator=torch.Generator().manual_seed(1))
    lengths = torch.full((args.batch,), samples)
    feeds = {"waveform": wav.numpy(), "lengths": lengths.numpy()}

    def run_torch():
        with torch.inference_mode():
            return graph(wav, lengths)

    def run_onnx():
        return session.run(None, feeds)

    for _ in range(args.warmup):
        run_torch()
        run_onnx()
    timings = {"pytorch": [], "onnxruntime": []}
    for _ in range(args.repeats):
        for name, call in (("pytorch", run_torch), ("onnxruntime", run_onnx)):
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
    expected = run_torch()[0].numpy()
    difference = float(np.abs(run_onnx()[0] - expected).max())
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(
        f"{args.preset}, batch {args.batch} x {args.seconds:g} s, {args.threads} threads, "
        f"{args.repeats} interleaved repeats (export took {export_seconds:.0f} s)"
    )
    print("| runtime | median latency (s) | ratio to PyTorch |")
    print("| --- | ---: | ---: |")
    for name in ("pytorch", "onnxruntime"):
        print(f"| {name} | {medians[name]:.3f} | {medians[name] / medians['pytorch']:.2f} |")
    print(f"max |onnxruntime - pytorch| on last_hidden_state: {difference:.2e}")


if __name__ == "__main__":
    main()
