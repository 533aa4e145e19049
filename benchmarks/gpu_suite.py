"""Every GPU figure from one short run: features, k-means, encoder, pre-training, memory, DDP.

    python benchmarks/gpu_suite.py --device cuda --out results/      # ~8 min on one H100/H200
    python benchmarks/gpu_suite.py --device cuda --out results/ --only pretrain max_batch
    python benchmarks/gpu_suite.py --device cpu --quick --out /tmp/suite   # tiny sizes, < 3 min

Parts (``--only NAME ...`` runs some; each run merges its parts into ``gpu_suite.json`` and
rewrites ``gpu_suite.md`` from all of them, so a cut-off run resumes part by part):

- ``features``: ``Fbank``/``MFCC``/``LogMel`` batched on the device against per-utterance
  CPU peers (``kaldi.fbank``/``kaldi.mfcc``, SpeechBrain, librosa) in audio-seconds per
  second; the speed-up is over the fastest peer of each feature (``benchmarks/features.py``);
- ``kmeans``: ``speechssl.cluster.KMeans`` fit + predict on 1 M x 39 MFCC frames, 500
  clusters, against scikit-learn's MiniBatchKMeans with fairseq's settings fit on two
  samples and extrapolated linearly in the frame count (``benchmarks/kmeans.py``);
- ``encoder``: hubert_base (and wavlm_base when ``speechssl.encoders`` has it) forward +
  backward in bf16 autocast: eager, ``torch.compile`` (the first preset only, to hold the
  budget), and each SDPA backend forced where it applies; audio-s/s, tokens/s, MFU against
  the GPU's peak bf16 rate with the FLOPs of ``benchmarks/encoder.py``'s ``forward_flops``,
  peak memory;
- ``pretrain``: the HuBERT and UniSpeech-SAT (mixing + contrastive) pre-training steps in
  bf16 against torchaudio's ``hubert_pretrain_base`` + its examples' loss, same weights
  (``benchmarks/pretrain.py``); also against fairseq's wav2vec 2.0 Base rate scaled to the
  device (about 260 audio-s/s per V100 at ~8 % of its 125 TFLOP/s fp16 peak);
- ``max_batch``: the largest Base pre-training batch (seconds of audio, 15 s utterances)
  that fits in 80 GiB, by doubling then bisection under a time cap;
- ``train_paths``: the Trainer itself for a few steps in bf16 and in fp16 with the grad
  scaler, fused AdamW, a ``pin_memory`` DataLoader and ``non_blocking`` copies (the GPU-only
  branches), and ``trainer.compile=true``;
- ``ddp``: a 2-process DDP step (NCCL on >= 2 GPUs, gloo on a CPU) through torchrun and
  ``speechssl.train.distributed.init_from_env``; skipped with a note on a single GPU.

Each part has a time budget (``FULL`` and ``QUICK``); warm-up and compilation count in it. A part that
fails records its one-line error and the others still run (exit code 1 at the end).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch
import torchaudio
from common import (
    PeakMemory,
    device_description,
    interleave,
    load_average,
    markdown_table,
    peak_bf16_flops,
    synchronize,
)
from encoder import forward_flops, one_step, step_ours
from features import DEMO_ROOT, load_corpus, make_batches
from kmeans import mfcc_39, neutral_inertia, run_sklearn
from pretrain import build_models, ours_step, padded_batch, reference_step
from sklearn.metrics import pairwise_distances_argmin
from speechbrain.lobes.features import Fbank as SpeechBrainFbank
from torch.nn.attention import SDPBackend, sdpa_kernel
from torchaudio.compliance import kaldi

from speechssl import audio
from speechssl.cluster import KMeans
from speechssl.data.collate import Batch
from speechssl.data.prepare.common import audio_files
from speechssl.encoders import PRESETS, build_encoder
from speechssl.features import MFCC, Fbank, LogMel, lengths_to_mask
from speechssl.objectives.masked_prediction import HubertPretrainModel, MaskedPredictionConfig
from speechssl.train import Trainer

SAMPLE_RATE = 16000
DEMO_DATA = Path(__file__).resolve().parents[1] / "speechssl" / "demo_data"
N_MELS = 80
MEMORY_BUDGET = 80 * 2**30  # the Base batch search: what an 80 GiB H100/A100 holds
# fairseq wav2vec 2.0 Base: 400k updates x 1.6 h of audio per batch in 1.6 days on 64 V100s
FAIRSEQ_AUDIO_S_PER_V100 = 260.0
V100_FP16_PEAK = 125e12
JSON_NAME, MARKDOWN_NAME = "gpu_suite.json", "gpu_suite.md"


@dataclass(frozen=True)
class Plan:
    """Sizes and time budgets (seconds) of every part."""

    feature_seconds: float  # utterance length (demo clips joined)
    feature_batch: int
    feature_utterances: int  # utterances per pass of ours (the corpus is repeated)
    peer_utterances: int  # utterances per pass of each per-utterance CPU peer
    kmeans_frames: int
    kmeans_clusters: int
    sklearn_samples: tuple[int, int]
    encoder_presets: tuple[str, ...]
    encoder_batch: int
    encoder_seconds: float
    pretrain_preset: str  # benchmarks/pretrain.py: "base" or "tiny"
    pretrain_batch: int
    pretrain_seconds: float
    max_batch_start: int
    memory_budget: int
    train_steps: int
    repeats: int
    budgets: dict


FULL = Plan(
    feature_seconds=15.0,
    feature_batch=64,
    feature_utterances=256,
    peer_utterances=8,
    kmeans_frames=1_000_000,
    kmeans_clusters=500,
    sklearn_samples=(20_000, 50_000),
    encoder_presets=("hubert_base", "wavlm_base"),
    encoder_batch=8,
    encoder_seconds=15.0,
    pretrain_preset="base",
    pretrain_batch=8,
    pretrain_seconds=15.0,
    max_batch_start=8,
    memory_budget=MEMORY_BUDGET,
    train_steps=5,
    repeats=5,
    budgets={
        "features": 40,
        "kmeans": 70,
        "encoder": 150,
        "pretrain": 90,
        "max_batch": 60,
        "train_paths": 40,
        "ddp": 30,
    },
)
QUICK = Plan(
    feature_seconds=1.5,
    feature_batch=8,
    feature_utterances=16,
    peer_utterances=4,
    kmeans_frames=5_000,
    kmeans_clusters=10,
    sklearn_samples=(1_000, 2_500),
    encoder_presets=("hubert_tiny", "wavlm_tiny"),
    encoder_batch=2,
    encoder_seconds=1.0,
    pretrain_preset="tiny",
    pretrain_batch=2,
    pretrain_seconds=1.0,
    max_batch_start=1,
    memory_budget=256 * 2**20,
    train_steps=4,
    repeats=3,
    budgets={
        "features": 10,
        "kmeans": 15,
        "encoder": 30,
        "pretrain": 30,
        "max_batch": 10,
        "train_paths": 30,
        "ddp": 40,
    },
)


@dataclass
class Context:
    device: torch.device
    plan: Plan
    compile: bool
    out: Path
    deadline: float = math.inf

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def peak_flops(self) -> float | None:
        return peak_bf16_flops(torch.cuda.get_device_name(self.device)) if self.on_cuda else None


def _mib(num_bytes: float) -> int | str:
    return "" if math.isnan(num_bytes) else round(num_bytes / 2**20)


def _rate(value: float) -> float:
    """Three significant figures: a slow CPU rate stays above 0, a GPU rate stays readable."""
    return float(f"{value:.3g}")


def _mfu(context: Context, flops: float, seconds: float) -> str:
    peak = context.peak_flops
    if peak is None:
        return "n/a (no bf16 peak known for this device)"
    return f"{100 * flops / seconds / peak:.1f}%"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


def _free_memory(context: Context) -> None:
    gc.collect()
    if context.on_cuda:
        torch.cuda.empty_cache()


def _peak_memory(context: Context, step: Callable[[], object]) -> float:
    """Peak extra bytes of one call of ``step`` (after the timed calls; see PeakMemory)."""
    memory = PeakMemory(context.device)
    memory.start()
    step()
    return memory.stop()


# ------------------------------------------------------------------------------ features
def part_features(context: Context) -> dict:
    plan, device = context.plan, context.device
    clips_per_utterance = max(1, round(plan.feature_seconds / 1.4))  # demo clips are ~1.4 s
    corpus = load_corpus(DEMO_ROOT, clips_per_utterance, None)
    # repeat the corpus to the planned size: throughput, not content, is measured
    wavs = (corpus * math.ceil(plan.feature_utterances / len(corpus)))[: plan.feature_utterances]
    batches = make_batches(wavs, plan.feature_batch, device)
    ours_seconds = sum(w.numel() for w in wavs) / SAMPLE_RATE
    peer_wavs = corpus[: plan.peer_utterances]
    peer_numpy = [w.numpy() for w in peer_wavs]
    peer_seconds = sum(w.numel() for w in peer_wavs) / SAMPLE_RATE

    logmel_options = {"n_fft": 512, "win_length": 400, "hop_length": 160, "f_min": 20.0}
    transforms = {
        "Fbank": Fbank(n_mels=N_MELS).to(device),
        "MFCC": MFCC().to(device),  # 13 cepstra + deltas + delta-deltas = 39 dims
        "LogMel": LogMel(n_mels=N_MELS, power=2.0, floor=1e-10, **logmel_options).to(device),
    }
    speechbrain = SpeechBrainFbank(n_mels=N_MELS)

    def ours(name: str) -> Callable[[], None]:
        def run() -> None:
            for batch, lengths in batches:
                transforms[name](batch, lengths)

        return run

    def librosa_logmel() -> None:
        for wav in peer_numpy:
            mel = librosa.feature.melspectrogram(
                y=wav, sr=SAMPLE_RATE, n_fft=512, win_length=400, hop_length=160, fmin=20.0,
                n_mels=N_MELS,
            )  # fmt: skip
            np.log(np.maximum(mel, 1e-10))

    def librosa_mfcc() -> None:
        for wav in peer_numpy:
            mfcc = librosa.feature.mfcc(y=wav, sr=SAMPLE_RATE, n_mfcc=13, n_fft=512, hop_length=160)
            np.concatenate(
                [mfcc, librosa.feature.delta(mfcc), librosa.feature.delta(mfcc, order=2)]
            )

    peers = {
        "Fbank": {
            "kaldi.fbank": lambda: [
                kaldi.fbank(w[None], num_mel_bins=N_MELS, dither=0.0) for w in peer_wavs
            ],
            "speechbrain Fbank": lambda: [speechbrain(w[None]) for w in peer_wavs],
        },
        "MFCC": {
            "kaldi.mfcc + deltas": lambda: [mfcc_39(w) for w in peer_wavs],
            "librosa mfcc + deltas": librosa_mfcc,
        },
        "LogMel": {"librosa melspectrogram + log": librosa_logmel},
    }
    steps = {f"ours {name}": ours(name) for name in transforms}
    for feature_peers in peers.values():
        steps.update({f"{name} (cpu)": run for name, run in feature_peers.items()})
    with torch.inference_mode():
        timings = interleave(steps, context.plan.repeats, device, deadline=context.deadline)
    rows = []
    for feature, feature_peers in peers.items():
        ours_rate = ours_seconds / timings[f"ours {feature}"].median
        rates = {name: peer_seconds / timings[f"{name} (cpu)"].median for name in feature_peers}
        fastest = max(rates, key=rates.__getitem__)
        rows.append(
            {
                "case": f"ours {feature}, batched on {device.type}",
                "batch": f"{plan.feature_batch} x {plan.feature_seconds:g} s",
                "audio s/s": _rate(ours_rate),
                "vs peer": f"{ours_rate / rates[fastest]:.1f}x {fastest}",
            }
        )
        for name, rate in rates.items():
            rows.append(
                {"case": f"{name}, per utterance (cpu)", "batch": "1", "audio s/s": _rate(rate)}
            )
    note = (
        f"{ours_seconds:.0f} s of audio per pass for ours ({len(corpus)} demo utterances of "
        f"~{plan.feature_seconds:g} s, repeated), {peer_seconds:.0f} s for each peer; CPU peers "
        f"at {torch.get_num_threads()} torch threads; {len(timings['ours Fbank'].wall)} repeats"
    )
    return {"rows": rows, "note": note}


# -------------------------------------------------------------------------------- k-means
def demo_mfcc_frames(num_frames: int, device: torch.device) -> tuple[np.ndarray, str]:
    """``(num_frames, 39)`` MFCC + deltas of the demo corpora, computed batched on ``device``.

    When the corpora hold fewer frames, perturbed copies follow (speed 0.9-1.1 by
    resampling, gain +-6 dB, 30 dB white noise: ``benchmarks/kmeans.py``'s perturbation,
    here batched on the device so that 1 M frames take seconds on a GPU).
    """
    wavs, samples = [], 0
    paths = audio_files(DEMO_DATA, "**/*")
    for path in paths:
        wavs.append(audio.load(path, sample_rate=SAMPLE_RATE))
        samples += wavs[-1].numel()
        if samples / 160 >= num_frames * 1.05:  # 100 frames per second
            break
    mfcc = MFCC().to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    chunks, frames, copy = [], 0, 0
    with torch.inference_mode():
        while frames < num_frames:
            for batch, lengths in make_batches(wavs, 32, device):
                if copy:
                    speed = (0.9, 1.1, 0.95, 1.05)[copy % 4]
                    batch = torchaudio.functional.resample(
                        batch, int(SAMPLE_RATE * speed), SAMPLE_RATE
                    )
                    lengths = (lengths / speed).long().clamp(max=batch.shape[1])
                    gain = torch.empty(len(batch), 1, device=device).uniform_(
                        -6, 6, generator=generator
                    )
                    noise = torch.randn(batch.shape, device=device, generator=generator)
                    batch = batch * 10 ** (gain / 20) + noise * batch.std() * 10 ** (-30 / 20)
                    batch = batch * lengths_to_mask(lengths, batch.shape[1])  # zero the padding
                features, feature_lengths = mfcc(batch, lengths)
                # (B, F, 39) -> (valid frames, 39)
                chunks.append(features[lengths_to_mask(feature_lengths, features.shape[1])].cpu())
                frames += int(feature_lengths.sum())
                if frames >= num_frames:
                    break
            copy += 1
    source = f"{len(wavs)} demo-corpus files, MFCC on {device.type}" + (
        f", {copy - 1} perturbed pass(es)" if copy > 1 else ""
    )
    return torch.cat(chunks)[:num_frames].numpy(), source


def part_kmeans(context: Context) -> dict:
    plan, device = context.plan, context.device
    frames, source = demo_mfcc_frames(plan.kmeans_frames, device)
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    clusters = plan.kmeans_clusters

    def ours() -> KMeans:
        model = KMeans(clusters, device=str(device), seed=0).fit(frames)
        model.predict(frames)
        synchronize(device)
        return model

    if context.on_cuda:  # CUDA context and kernels, outside the timing
        KMeans(clusters, device=str(device), seed=0).fit(frames[: 20 * clusters])
    start = time.perf_counter()
    model = ours()
    ours_seconds = time.perf_counter() - start

    # scikit-learn (fairseq's settings) on two samples; fit + predict time is close to
    # linear in the frame count (fixed: k-means++ seeding on 3 x batch_size frames;
    # linear: the mini-batch passes and predict), so a line through both extrapolates
    sklearn_times, sklearn_models = [], {}
    for size in plan.sklearn_samples:
        sample = frames[:size]
        start = time.perf_counter()
        centers = run_sklearn(sample, clusters, 0)
        pairwise_distances_argmin(sample, centers)  # what MiniBatchKMeans.predict computes
        sklearn_times.append(time.perf_counter() - start)
        sklearn_models[size] = centers
    (small, large), (time_small, time_large) = plan.sklearn_samples, sklearn_times
    slope = (time_large - time_small) / (large - small)
    extrapolated = time_large + slope * (len(frames) - large)
    # inertia on the larger sample, which scikit-learn fit and ours only saw among the rest
    sample64 = frames[:large].astype(np.float64)
    ours_inertia = neutral_inertia(sample64, model.cluster_centers_.cpu().numpy())
    sklearn_inertia = neutral_inertia(sample64, sklearn_models[large])
    rows = [
        {
            "case": f"speechssl KMeans fit + predict ({device.type})",
            "batch": f"{len(frames):,} x 39, k={clusters}",
            "step (s)": round(ours_seconds, 2),
            "vs peer": f"{extrapolated / ours_seconds:.1f}x sklearn (extrapolated)",
            "note": f"inertia on the {large:,}-frame sample: "
            f"{ours_inertia / sklearn_inertia:.4f}x sklearn's",
        },
        {
            "case": "sklearn MiniBatchKMeans (fairseq settings) fit + predict (cpu)",
            "batch": f"{len(frames):,} x 39, k={clusters}",
            "step (s)": round(extrapolated, 2),
            "note": f"extrapolated: {time_small:.2f} s at {small:,} frames, {time_large:.2f} s "
            f"at {large:,}, a line through both to {len(frames):,}",
        },
    ]
    return {"rows": rows, "note": f"frames: {source}"}


# -------------------------------------------------------------------------------- encoder
def _padded_wav(batch_size: int, seconds: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(B, T)`` batch whose rows after the first are 80 % long, as training sees."""
    generator = torch.Generator().manual_seed(0)
    wav = torch.randn(batch_size, int(seconds * SAMPLE_RATE), generator=generator)
    lengths = torch.full((batch_size,), wav.shape[1])
    lengths[1:] = (lengths[1:] * 0.8).long()
    return wav.to(device), lengths.to(device)


def _sdpa_step(backend: SDPBackend, step: Callable[[], int]) -> Callable[[], int]:
    def run() -> int:
        with sdpa_kernel(backend):
            return step()

    return run


def part_encoder(context: Context) -> dict:
    plan, device = context.plan, context.device
    wav, lengths = _padded_wav(plan.encoder_batch, plan.encoder_seconds, device)
    rows, notes = [], []
    presets = [name for name in plan.encoder_presets if name in PRESETS]
    notes += [
        f"{name}: not in speechssl.encoders" for name in plan.encoder_presets if name not in presets
    ]
    for index, preset in enumerate(presets):
        # the presets share what is left of the part's budget
        deadline = time.perf_counter() + (context.deadline - time.perf_counter()) / (
            len(presets) - index
        )
        torch.manual_seed(0)
        model = build_encoder(preset, layer_drop=0.0).to(device).train()

        def step(run_model=model, step_lengths=lengths) -> int:
            return one_step(run_model, step_ours, wav, step_lengths, torch.bfloat16, device)

        steps: dict[str, Callable[[], int]] = {"eager, SDPA default": step}
        if context.compile and index == 0:  # one compilation per part: it costs a minute or two
            compiled = torch.compile(model)
            steps["torch.compile"] = lambda compiled=compiled: step(compiled)
        for backend in (
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.CUDNN_ATTENTION,
            SDPBackend.MATH,
        ):
            forced = _sdpa_step(backend, step)
            try:  # a backend that cannot take this input (a padding mask, the device) raises
                forced()
            except RuntimeError as error:
                rows.append(
                    {"case": f"{preset} eager, SDPA {backend.name} only", "note": "n/a: "
                     + _first_line(error)[:120]}
                )  # fmt: skip
                continue
            steps[f"eager, SDPA {backend.name} only"] = forced
        # flash attention takes no mask: an unpadded batch (no lengths) lets it apply
        unpadded = _sdpa_step(SDPBackend.FLASH_ATTENTION, lambda: step(step_lengths=None))
        try:
            unpadded()
            steps["eager, SDPA FLASH_ATTENTION only, unpadded batch"] = unpadded
        except RuntimeError as error:
            notes.append(f"{preset} flash on an unpadded batch: {_first_line(error)}")
        timings = interleave(steps, plan.repeats, device, deadline=deadline)
        full_lengths = torch.full_like(lengths, wav.shape[1])
        try:  # forward + backward = 3x the forward FLOPs, valid samples only
            flops = {
                padded: 3 * sum(forward_flops(model, int(n)) for n in batch_lengths)
                for padded, batch_lengths in ((True, lengths), (False, full_lengths))
            }
        except AttributeError:  # a family whose config forward_flops does not read
            flops = None
        for name, timing in timings.items():
            seconds = timing.median
            padded = "unpadded" not in name
            batch_lengths = lengths if padded else full_lengths
            audio = int(batch_lengths.sum()) / SAMPLE_RATE
            frames = int(model.output_lengths(batch_lengths).sum())
            rows.append(
                {
                    "case": f"{preset} fwd+bwd bf16, {name}",
                    "batch": f"{plan.encoder_batch} x {plan.encoder_seconds:g} s",
                    "step (s)": round(seconds, 4),
                    "audio s/s": _rate(audio / seconds),
                    "tokens/s": _rate(frames / seconds),
                    "MFU": _mfu(context, flops[padded], seconds) if flops else "n/a (FLOPs)",
                    "peak (MiB)": _mib(_peak_memory(context, steps[name])),
                    "vs peer": f"{timings['eager, SDPA default'].median / seconds:.2f}x eager",
                }
            )
        del model, steps, timings
        _free_memory(context)
    return {"rows": rows, "note": "; ".join(notes)}


# ------------------------------------------------------------------------------- pretrain
def part_pretrain(context: Context) -> dict:
    plan, device = context.plan, context.device
    torch.manual_seed(0)
    reference, hubert = build_models(plan.pretrain_preset, 500, unispeech_sat=False)
    torch.manual_seed(0)  # the same weights, plus mixing and the contrastive loss
    _, unispeech_sat = build_models(plan.pretrain_preset, 500, unispeech_sat=True)
    for model in (reference, hubert, unispeech_sat):
        model.to(device)
    batch, tokens = padded_batch(hubert, plan.pretrain_batch, plan.pretrain_seconds, 500, device)
    dtype = torch.bfloat16
    steps = {
        "torchaudio hubert_pretrain + example loss": reference_step(reference, batch, dtype),
        "speechssl HuBERT": ours_step(hubert, batch, dtype),
        "speechssl UniSpeech-SAT (mixing + contrastive)": ours_step(unispeech_sat, batch, dtype),
    }
    if context.compile:
        steps["speechssl HuBERT, torch.compile"] = ours_step(torch.compile(hubert), batch, dtype)
    # two warm-up rounds: the compiled step recompiles once with dynamic shapes on its second
    # call (the masked-frame count changes from step to step)
    timings = interleave(steps, plan.repeats, device, warmup=2, deadline=context.deadline)
    audio = float(batch.lengths.sum()) / SAMPLE_RATE
    flops = 3 * sum(forward_flops(hubert.encoder, int(n)) for n in batch.lengths.tolist())
    reference_seconds = timings["torchaudio hubert_pretrain + example loss"].median
    peak = context.peak_flops
    rows = []
    for name, timing in timings.items():
        seconds = timing.median
        row = {
            "case": f"{plan.pretrain_preset} pre-training step bf16, {name}",
            "batch": f"{plan.pretrain_batch} x {plan.pretrain_seconds:g} s",
            "step (s)": round(seconds, 4),
            "audio s/s": _rate(audio / seconds),
            "tokens/s": _rate(tokens / seconds),
            "MFU": _mfu(context, flops, seconds),
            "peak (MiB)": _mib(_peak_memory(context, steps[name])),
            "vs peer": f"{reference_seconds / seconds:.2f}x torchaudio",
        }
        if peak is not None and name.startswith("speechssl"):
            fairseq = FAIRSEQ_AUDIO_S_PER_V100 * peak / V100_FP16_PEAK
            row["note"] = f"{audio / seconds / fairseq:.2f}x fairseq's Base rate scaled to this GPU"
        rows.append(row)
    return {
        "rows": rows,
        "note": f"500 classes, {tokens} valid frames, FLOPs: encoder forward x 3",
    }


# ------------------------------------------------------------------------------ max_batch
def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def part_max_batch(context: Context) -> dict:
    """Doubling, then bisection, on the utterance count of the pre-training step."""
    plan, device = context.plan, context.device
    torch.manual_seed(0)
    _, model = build_models(plan.pretrain_preset, 500, unispeech_sat=False)
    model.to(device)
    budget = plan.memory_budget
    if context.on_cuda:
        # the allocator raises at the budget even on a larger GPU (an H200 holds 141 GB)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total), device)
    tried: dict[int, float | None] = {}  # batch size -> peak bytes, None when it failed

    def fits(batch_size: int) -> bool:
        batch, _ = padded_batch(model, batch_size, plan.pretrain_seconds, 500, device)
        batch.lengths.fill_(batch.wav.shape[1])  # every utterance full length
        try:
            peak = _peak_memory(context, ours_step(model, batch, torch.bfloat16))
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not _is_out_of_memory(error):
                raise
            peak = None
        del batch
        model.zero_grad(set_to_none=True)
        _free_memory(context)
        tried[batch_size] = peak
        return peak is not None and peak <= budget

    good, bad, size = 0, None, plan.max_batch_start
    try:
        while bad is None and time.perf_counter() < context.deadline and size <= 65536:
            if fits(size):
                good, size = size, size * 2
            else:
                bad = size
        while bad is not None and bad - good > 1 and time.perf_counter() < context.deadline:
            middle = (good + bad) // 2
            if fits(middle):
                good = middle
            else:
                bad = middle
    finally:
        if context.on_cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    exact = bad is not None and bad - good <= 1
    searched = ", ".join(
        f"{size}: {'OOM' if peak is None else f'{_mib(peak)} MiB'}"
        for size, peak in sorted(tried.items())
    )
    row = {
        "case": f"largest {plan.pretrain_preset} pre-training batch in "
        f"{budget / 2**30:g} GiB (bf16, speechssl HuBERT)",
        "batch": f"{good} x {plan.pretrain_seconds:g} s = {good * plan.pretrain_seconds:g} s",
        "peak (MiB)": _mib(tried[good]) if good else "",
        "note": ("exact" if exact else "a lower bound (time cap)") + f"; tried {searched}",
    }
    return {"rows": [row]}


# ---------------------------------------------------------------------------- train_paths
class _SyntheticBatches(torch.utils.data.Dataset):
    """``count`` padded batches with frame labels, built on the CPU (a loader pins them)."""

    def __init__(self, model: HubertPretrainModel, count: int, batch_size: int, seconds: float):
        generator = torch.Generator().manual_seed(0)
        self.batches = []
        for _ in range(count):
            namespace, _ = padded_batch(model, batch_size, seconds, 32, torch.device("cpu"))
            self.batches.append(
                Batch(
                    wav=namespace.wav,
                    lengths=namespace.lengths,
                    indices=torch.arange(batch_size),
                    frame_labels=torch.randint(
                        0, 32, namespace.frame_labels.shape, generator=generator
                    ),
                )
            )

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return self.batches[index]


def part_train_paths(context: Context) -> dict:
    """The Trainer's GPU-oriented branches, a few steps each, on a tiny model."""
    plan, device = context.plan, context.device
    cases = [("bf16", False), ("fp16", False)]
    if context.compile:
        cases.append(("bf16", True))
    rows = []
    for precision, compile_model in cases:
        torch.manual_seed(0)
        model = HubertPretrainModel(
            build_encoder("hubert_tiny", layer_drop=0.0),
            MaskedPredictionConfig(num_classes=[32], final_dim=32),
        )
        dataset = _SyntheticBatches(model, plan.train_steps, 2, 1.0)
        # batch_size=None: the dataset yields whole Batch objects, which pin themselves
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, pin_memory=context.on_cuda)
        pinned = next(iter(loader)).wav.is_pinned()
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(
                model,
                loader,
                trainer_cfg={
                    "max_steps": plan.train_steps,
                    "precision": precision,
                    "compile": compile_model,
                    "device": device.type,
                    "log_every": 1,
                    "tensorboard": False,
                    "checkpoint_every": 1000,
                },
                optim_cfg={"lr": 1e-4, "fused": True, "schedule": "constant"},
                run_dir=run_dir,
                show_progress=False,
            )
            start = time.perf_counter()
            result = trainer.fit()
            seconds = time.perf_counter() - start
        checks = [
            f"fused AdamW: {trainer.optimizer.defaults['fused']}",
            f"grad scaler: {'on, scale ' + format(trainer.scaler.get_scale(), 'g') if trainer.scaler.is_enabled() else 'off'}",
            f"pinned batches: {pinned}",
            f"non-finite steps: {result['nonfinite_steps']}",
            f"final loss {result['train_loss']:.3f}",
        ]  # fmt: skip
        if not math.isfinite(result["train_loss"]) or result["nonfinite_steps"]:
            raise RuntimeError(f"Trainer {precision} produced non-finite steps: {checks}")
        rows.append(
            {
                "case": f"Trainer hubert_tiny, {precision}"
                + (", trainer.compile=true" if compile_model else ""),
                "batch": "2 x 1 s",
                "step (s)": round(seconds / plan.train_steps, 4),
                "note": "; ".join(checks) + " (time per step includes compilation)"
                if compile_model
                else "; ".join(checks),
            }
        )
    return {"rows": rows, "note": "non_blocking copies: the Trainer moves every batch with "
            "Batch.to(device, non_blocking=True)"}  # fmt: skip


# ------------------------------------------------------------------------------------ ddp
def part_ddp(context: Context) -> dict:
    device = context.device
    if context.on_cuda and torch.cuda.device_count() < 2:
        return {
            "status": "skipped",
            "rows": [{"case": "2-process DDP step over NCCL", "note": "skipped: one GPU"}],
            "note": f"{torch.cuda.device_count()} GPU on this machine; run on >= 2 for NCCL",
        }
    with tempfile.TemporaryDirectory() as folder:
        result_path = Path(folder) / "ddp.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            str(Path(__file__).with_name("ddp_step.py")), "--device", device.type,
            "--result", str(result_path),
        ] + (["--quick"] if context.plan is QUICK else [])  # fmt: skip
        timeout = max(10.0, context.deadline - time.perf_counter() + 30)
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        completed = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout, env=environment
        )
        if completed.returncode != 0:
            lines = (completed.stderr or completed.stdout).strip().splitlines()
            # a rank's own error line says more than torchrun's closing summary
            tail = [line for line in lines if "Error" in line][-2:] + lines[-1:]
            raise RuntimeError(f"torchrun exited {completed.returncode}: {' | '.join(tail)}")
        result = json.loads(result_path.read_text())
    if not result["ranks_agree"]:
        raise RuntimeError("DDP ranks hold different weights after the steps")
    row = {
        "case": f"2-process DDP step over {result['backend'].upper()} ({result['preset']}, "
        "bf16, fused AdamW)",
        "batch": result["batch"],
        "step (s)": round(result["step_seconds"], 4),
        "note": "ranks hold identical weights after 4 steps",
    }
    return {"rows": [row]}


PARTS: dict[str, Callable[[Context], dict]] = {
    "features": part_features,
    "kmeans": part_kmeans,
    "encoder": part_encoder,
    "pretrain": part_pretrain,
    "max_batch": part_max_batch,
    "train_paths": part_train_paths,
    "ddp": part_ddp,
}


# ------------------------------------------------------------------------------ reporting
def machine() -> dict:
    return {
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "cuda": torch.version.cuda,
        "cpu threads": torch.get_num_threads(),
    }


def write_report(out: Path, results: dict) -> None:
    """``gpu_suite.json`` (all parts so far) and ``gpu_suite.md`` (one table) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / (JSON_NAME + ".tmp")
    temporary.write_text(json.dumps(results, indent=1))
    os.replace(temporary, out / JSON_NAME)
    lines = ["# GPU suite", ""]
    devices = sorted({part["device"] for part in results["parts"].values()})
    lines.append(f"Device: {', '.join(devices)}; {json.dumps(results['machine'])}")
    lines.append("")
    table = []
    for name in [name for name in PARTS if name in results["parts"]]:
        part = results["parts"][name]
        header = {
            "part": name,
            "case": f"**{part['status']}** in {part['seconds']:.0f} s, load average "
            f"{part['load average']}, {part['date']}" + (" (quick)" if part["quick"] else ""),
            "note": part.get("note", ""),
        }
        table.append(header)
        table += [{"part": name, **row} for row in part["rows"]]
    lines.append(markdown_table(table))
    (out / MARKDOWN_NAME).write_text("\n".join(lines) + "\n")


def run_parts(names: list[str], context: Context, results: dict) -> bool:
    """Run the named parts in order, merging each into ``results`` and the report files."""
    all_ok = True
    for name in names:
        budget = context.plan.budgets[name]
        start = time.perf_counter()
        context.deadline = start + budget
        print(f"[{name}] budget {budget} s, load average {load_average()}", flush=True)
        try:
            outcome = PARTS[name](context)
            status = outcome.pop("status", "ok")
        except Exception as error:  # noqa: BLE001 (one part's failure must not cost the GPU window)
            traceback.print_exc()
            outcome, status, all_ok = {"rows": [], "note": _first_line(error)}, "failed", False
        _free_memory(context)
        elapsed = time.perf_counter() - start
        results["parts"][name] = {
            "status": status,
            "seconds": round(elapsed, 1),
            "budget": budget,
            "device": device_description(context.device),
            "quick": context.plan is QUICK,
            "load average": load_average(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            **outcome,
        }
        write_report(context.out, results)
        print(f"[{name}] {status} in {elapsed:.0f} s: {outcome.get('note', '')}", flush=True)
        for row in outcome["rows"]:
            print("   ", json.dumps(row), flush=True)
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for the report")
    parser.add_argument("--only", nargs="+", choices=list(PARTS), help="run only these parts")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check)")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but CUDA is not available; use --device cpu --quick", file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.quick:
        # the full sizes are GPU sizes: on a CPU they would run for hours
        print("on a CPU the suite runs its --quick sizes", file=sys.stderr)
    plan = QUICK if args.quick or device.type == "cpu" else FULL
    report = args.out / JSON_NAME
    results = json.loads(report.read_text()) if report.is_file() else {"parts": {}}
    results["machine"] = machine()
    context = Context(device=device, plan=plan, compile=not args.no_compile, out=args.out)
    start = time.perf_counter()
    all_ok = run_parts(args.only or list(PARTS), context, results)
    print(f"total {time.perf_counter() - start:.0f} s; report in {args.out / MARKDOWN_NAME}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
