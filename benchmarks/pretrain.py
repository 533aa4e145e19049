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
    python benchmarks/pretrain.py --compile                     # + torch.compile(ours), inductor
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
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
from common import PeakMemory, interleave, load_average  # the sibling modules
from encoder import forward_flops, sgemm_peak_flops


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


def padded_batch(
    ours: HubertPretrainModel, batch_size: int, seconds: float, num_classes: int, device
) -> tuple[SimpleNamespace, int]:
    """A padded batch (lengths spread from 70 % to 100 % of ``seconds``) with random frame
    labels, and its count of valid frames (tokens)."""
    num_samples = int(seconds * 16000)
    lengths = torch.linspace(0.7, 1.0, batch_size).mul(num_samples).long().flip(0)
    lengths[0] = num_samples
    wav = torch.randn(batch_size, num_samples) * (
        torch.arange(num_samples)[None] < lengths[:, None]
    )
    frame_lengths = ours.encoder.output_lengths(lengths)
    labels = torch.randint(0, num_classes, (batch_size, int(frame_lengths.max())))
    batch = SimpleNamespace(
        wav=wav.to(device),
        lengths=lengths.to(device),
        frame_labels=labels.to(device),
        frame_label_lengths=None,
    )
    return batch, int(frame_lengths.sum())


def reference_step(reference, batch, dtype: torch.dtype) -> Callable[[], float]:
    """torchaudio's forward + example loss + backward under ``dtype`` autocast."""
    device_type = batch.wav.device.type

    def step() -> float:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            logit_m, logit_u, feature_pen = reference(batch.wav, batch.frame_labels, batch.lengths)
            loss = (
                torchaudio_hubert_loss(logit_m.float(), logit_u.float(), feature_pen)
                / logit_m.shape[0]
            )
        loss.backward()
        reference.zero_grad(set_to_none=True)
        return float(loss.detach())  # float() synchronises

    return step


def ours_step(model, batch, dtype: torch.dtype) -> Callable[[], float]:
    """Our forward (masking, mixing, losses) + backward under ``dtype`` autocast; ``model``
    may be ``torch.compile(ours)``."""
    device_type = batch.wav.device.type

    def step() -> float:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = model(batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


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
        help="autocast dtype (bfloat16 runs on a CPU too)",
    )
    parser.add_argument(
        "--unispeech-sat", action="store_true", help="add mixing + contrastive loss to ours"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile(ours) (inductor), interleaved with eager",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    reference, ours = build_models(args.preset, args.num_classes, args.unispeech_sat)
    reference.to(device)
    ours.to(device)

    batch, tokens = padded_batch(ours, args.batch_size, args.seconds, args.num_classes, device)
    lengths = batch.lengths
    autocast_dtype = getattr(torch, args.dtype)
    steps = {
        "torchaudio": reference_step(reference, batch, autocast_dtype),
        "speechssl": ours_step(ours, batch, autocast_dtype),
    }
    if args.compile:
        steps["speechssl+compile"] = ours_step(torch.compile(ours), batch, autocast_dtype)
    print(f"load average before: {load_average()}")
    timings = interleave(steps, repeats=args.repeats, device=device, warmup=args.warmup)
    wall = {name: timing.wall for name, timing in timings.items()}
    cpu = {name: timing.cpu for name, timing in timings.items()}
    losses = {name: timing.result for name, timing in timings.items()}  # the last repeat's
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
        "| peak step memory (MiB) | loss (last repeat) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key in steps:
        median = statistics.median(wall[key])
        print(
            f"| {key} | {median:.3f} | {statistics.median(cpu[key]):.3f} | {tokens / median:,.0f} | "
            f"{statistics.median(peaks[key]) / 2**20:,.0f} | {losses[key]:.3f} |"
        )
    ratio_wall = statistics.median(wall["speechssl"]) / statistics.median(wall["torchaudio"])
    ratio_cpu = statistics.median(cpu["speechssl"]) / statistics.median(cpu["torchaudio"])
    ratio_memory = statistics.median(peaks["speechssl"]) / statistics.median(peaks["torchaudio"])
    print()
    print(
        f"speechssl / torchaudio: wall time {ratio_wall:.2f}x, process CPU time {ratio_cpu:.2f}x, "
        f"peak memory {ratio_memory:.2f}x"
    )
    if args.compile:
        compiled_wall = statistics.median(wall["speechssl+compile"])
        compiled_cpu = statistics.median(cpu["speechssl+compile"])
        print(
            f"compiled / eager (speechssl): wall time "
            f"{compiled_wall / statistics.median(wall['speechssl']):.2f}x, process CPU time "
            f"{compiled_cpu / statistics.median(cpu['speechssl']):.2f}x"
        )
    print(f"load average after: {load_average()}")
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
