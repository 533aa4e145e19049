"""Benchmark: one HuBERT pre-training step, speechssl against torchaudio.

Both sides hold the same weights (torchaudio's ``hubert_pretrain_base()`` architecture by
default, random init; ours converted with ``speechssl.encoders.wav2vec2.convert.from_torchaudio``) and get
the same padded batch and the same frame labels. One step is forward + loss + backward
(no optimizer update: it costs both sides the same):

- torchaudio: ``HuBERTPretrainModel(waveforms, labels, lengths)`` (its own mask generator)
  and the HuBERT loss of its example recipe (``examples/hubert/loss/hubert_loss.py``,
  restated below), divided by the masked-frame count;
- ours: ``HubertPretrainModel(batch)``, which returns the same loss.

Layer drop is off on both sides so every step runs every layer; dropout is the Base one.
Steps are interleaved (the order alternates each repeat) and the medians are compared: wall time,
and on a CPU also the process CPU time, which a loaded machine disturbs less.
Peak memory of a step: on a GPU ``torch.cuda.max_memory_allocated`` above the memory held
before the step; on a CPU the rise of the process's peak resident set (``VmHWM``, reset
through ``/proc/self/clear_refs`` after ``malloc_trim``) over its resident set before the
step. Throughput is in valid frames (50 Hz tokens) per second.

Run:
    python benchmarks/pretrain.py                               # CPU, Base, 2 x 4 s
    python benchmarks/pretrain.py --threads 1                   # steadiest on a shared CPU
    python benchmarks/pretrain.py --device cuda --batch-size 8 --seconds 10 --dtype bfloat16
    python benchmarks/pretrain.py --unispeech-sat               # + mixing and contrastive loss (ours only)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
import torchaudio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from speechssl.encoders.wav2vec2.convert import from_torchaudio
from speechssl.objectives.masked_prediction import (
    ContrastiveConfig,
    HubertPretrainModel,
    MaskedPredictionConfig,
    MixingConfig,
)
from speechssl.testing import small_hubert_pretrain_reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encoder import forward_flops, sgemm_peak_flops  # the sibling benchmark


def torchaudio_hubert_loss(
    logit_m, logit_u, feature_pen, masked_weight=1.0, unmasked_weight=0.0, feature_weight=10.0
):
    """torchaudio examples/hubert/loss/hubert_loss.py (not in the wheel): summed CE with the
    positive in column 0, feature penalty scaled by the masked-frame count."""
    loss = feature_pen * feature_weight * logit_m.shape[0]
    loss = (
        loss
        + F.cross_entropy(
            logit_m,
            torch.zeros(len(logit_m), dtype=torch.long, device=logit_m.device),
            reduction="sum",
        )
        * masked_weight
    )
    if logit_u is not None and unmasked_weight:
        loss = (
            loss
            + F.cross_entropy(
                logit_u,
                torch.zeros(len(logit_u), dtype=torch.long, device=logit_u.device),
                reduction="sum",
            )
            * unmasked_weight
        )
    return loss


def build_models(preset: str, num_classes: int, unispeech_sat: bool):
    if preset == "base":
        reference = torchaudio.models.hubert_pretrain_base(
            encoder_layer_drop=0.0, num_classes=num_classes
        )
    else:  # the shape of speechssl's hubert_tiny preset
        reference = small_hubert_pretrain_reference(32, 64, 2, 128, num_classes, dropout=0.1)
    # our default, padding-invariant group norm (the converted model keeps torchaudio's otherwise)
    encoder = from_torchaudio(reference.wav2vec2, padding_invariant=True)
    encoder.config.feature_grad_mult = 0.1
    config = MaskedPredictionConfig(num_classes=[num_classes], final_dim=256)
    if unispeech_sat:
        layer = min(6, encoder.num_layers)
        config.mixing = MixingConfig(enabled=True)
        config.contrastive = ContrastiveConfig(enabled=True, layer=layer)
    ours = HubertPretrainModel(encoder, config)
    ours.final_proj.load_state_dict(reference.logit_generator.final_proj.state_dict())
    ours.label_embeddings.data.copy_(reference.logit_generator.label_embeddings.data)
    ours.encoder.mask_embedding.data.copy_(reference.mask_generator.mask_embedding.data)
    return reference.train(), ours.train()


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator peak, or the CPU process's VmHWM rise."""

    def __init__(self, device: torch.device):
        self.device = device
        self.libc = None
        if device.type == "cpu" and os.path.exists("/proc/self/clear_refs"):
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(
                -3, 64 * 1024
            )  # M_MMAP_THRESHOLD: big buffers go back to the OS on free

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument("--preset", choices=["base", "tiny"], default="base")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="longest utterance; the others are shorter"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="autocast dtype on cuda",
    )
    parser.add_argument(
        "--unispeech-sat", action="store_true", help="add mixing + contrastive loss to ours"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    reference, ours = build_models(args.preset, args.num_classes, args.unispeech_sat)
    reference.to(device)
    ours.to(device)

    # a padded batch: lengths spread from 70 % to 100 % of the longest
    num_samples = int(args.seconds * 16000)
    lengths = torch.linspace(0.7, 1.0, args.batch_size).mul(num_samples).long().flip(0)
    lengths[0] = num_samples
    wav = torch.randn(args.batch_size, num_samples) * (
        torch.arange(num_samples)[None] < lengths[:, None]
    )
    frame_lengths = ours.encoder.output_lengths(lengths)
    num_frames = int(frame_lengths.max())
    labels = torch.randint(0, args.num_classes, (args.batch_size, num_frames))
    wav, lengths, labels = wav.to(device), lengths.to(device), labels.to(device)
    batch = SimpleNamespace(wav=wav, lengths=lengths, labels=labels)
    tokens = int(frame_lengths.sum())

    autocast_dtype = getattr(torch, args.dtype)
    use_autocast = device.type == "cuda" and args.dtype != "float32"

    def step_reference() -> float:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
            logit_m, logit_u, feature_pen = reference(wav, labels, lengths)
            loss = (
                torchaudio_hubert_loss(logit_m.float(), logit_u.float(), feature_pen)
                / logit_m.shape[0]
            )
        loss.backward()
        reference.zero_grad(set_to_none=True)
        return float(loss.detach())

    def step_ours() -> float:
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=use_autocast):
            loss, _ = ours(batch)
        loss.backward()
        ours.zero_grad(set_to_none=True)
        return float(loss.detach())

    steps = {"torchaudio": step_reference, "speechssl": step_ours}
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    losses = {name: [] for name in steps}
    for repeat in range(args.warmup + args.repeats):
        order = list(steps) if repeat % 2 == 0 else list(reversed(steps))
        for name in order:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            loss = steps[name]()  # float(loss) synchronises
            elapsed_wall, elapsed_cpu = (
                time.perf_counter() - start_wall,
                time.process_time() - start_cpu,
            )
            if repeat >= args.warmup:
                wall[name].append(elapsed_wall)
                cpu[name].append(elapsed_cpu)
                losses[name].append(loss)
    # memory after the timings, in steps of its own: on a CPU, measuring it means sending
    # every buffer back to the OS on free (mmap), and re-faulting those pages would
    # inflate the timed steps (by a third for both sides)
    memory = PeakMemory(device)
    peaks = {name: [] for name in steps}
    for _ in range(2):
        for name, step in steps.items():
            memory.start()
            step()
            peaks[name].append(memory.stop())

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"HuBERT pre-training step ({args.preset}, {args.num_classes} classes"
        f"{', UniSpeech-SAT additions in ours' if args.unispeech_sat else ''}), "
        f"batch {args.batch_size} x {args.seconds:g} s padded ({tokens} valid frames), {args.dtype}, "
        f"{name}, {args.repeats} interleaved repeats, torch {torch.__version__}, "
        f"torchaudio {torchaudio.__version__}"
    )
    print()
    # on a shared CPU the process CPU time is the steadier measure of work done
    print(
        "| implementation | median step, wall (s) | median step, process CPU (s) | tokens/s (wall) "
        "| peak step memory (MiB) | loss (median) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key in steps:
        median = statistics.median(wall[key])
        print(
            f"| {key} | {median:.3f} | {statistics.median(cpu[key]):.3f} | {tokens / median:,.0f} | "
            f"{statistics.median(peaks[key]) / 2**20:,.0f} | {statistics.median(losses[key]):.3f} |"
        )
    ratio_wall = statistics.median(wall["speechssl"]) / statistics.median(wall["torchaudio"])
    ratio_cpu = statistics.median(cpu["speechssl"]) / statistics.median(cpu["torchaudio"])
    ratio_memory = statistics.median(peaks["speechssl"]) / statistics.median(peaks["torchaudio"])
    print()
    print(
        f"speechssl / torchaudio: wall time {ratio_wall:.2f}x, process CPU time {ratio_cpu:.2f}x, "
        f"peak memory {ratio_memory:.2f}x"
    )
    if device.type == "cpu":
        # roofline: the encoder's forward + backward FLOPs (3x forward) at this CPU's SGEMM
        # rate; the objective adds little. No float32 implementation can go below the floor.
        step_flops = sum(3 * forward_flops(ours.encoder, int(n)) for n in lengths.tolist())
        peak = sgemm_peak_flops()
        shares = {
            key: step_flops / statistics.median(cpu[key]) / peak
            for key in ("speechssl", "torchaudio")
        }
        print(
            f"roofline: {step_flops / 1e9:.0f} GFLOP per step; SGEMM rate {peak / 1e9:.1f} GFLOP/s; "
            f"speechssl at {shares['speechssl']:.0%}, torchaudio at {shares['torchaudio']:.0%} of it; "
            f"lowest possible ratio {shares['torchaudio']:.2f}x"
        )


if __name__ == "__main__":
    main()
