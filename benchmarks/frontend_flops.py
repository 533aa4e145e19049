"""Mel-input HuBERT vs the waveform-CNN HuBERT: FLOPs per audio second and step times.

For each size (``tiny``, ``small``, ``base``) the same Transformer runs behind the two
front ends of :class:`speechssl.encoders.wav2vec2.Wav2Vec2Config`: ``conv`` (``hubert_<size>``,
the 7-block waveform CNN) and ``fbank`` (``hubert_mel_<size>``: Kaldi log-mel, stacked to
50 Hz). ``small`` has no CNN preset, so its conv row is ``hubert_mel_small`` with
``front_end=conv`` (Base's CNN before the small Transformer).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matrix
multiplications and convolutions (2 per multiply-add); the filterbank's FFT is not an
aten op it counts, so its analytic cost (5 N log2 N per 512-point real FFT, Kaldi's
frame, 100 frames per second) is added to the fbank front end's figure. Per audio second:

- front end: ``extract_features`` (the CNN, or filterbanks + stacking) + ``project``;
- model forward: the whole encoder forward;
- training step: forward + backward of the whole encoder.

Then both encoders' training steps (and their front ends' forwards) are timed interleaved
in this process (``benchmarks/common.py``), medians and the fbank/conv ratio printed.

    python benchmarks/frontend_flops.py --sizes tiny small base --seconds 4 --repeats 5
    python benchmarks/frontend_flops.py --device cuda --sizes base --batch 8 --seconds 15
"""

from __future__ import annotations

import argparse
import math

import torch
from common import device_description, interleave, load_average, markdown_table
from torch.utils.flop_counter import FlopCounterMode

from speechssl.encoders import build_encoder

# size -> (conv preset or (preset, overrides), fbank preset)
PAIRS = {
    "tiny": (("hubert_tiny", {}), ("hubert_mel_tiny", {})),
    "small": (("hubert_mel_small", {"front_end": "conv"}), ("hubert_mel_small", {})),
    "base": (("hubert_base", {}), ("hubert_mel_base", {})),
}
FFT_SIZE = 512  # Kaldi rounds the 400-sample (25 ms) window up to a power of two
FBANK_FRAMES_PER_SECOND = 100  # 10 ms hop


def fft_flops_per_second() -> float:
    """Analytic FLOPs of the filterbank's real FFTs per audio second (not counted by
    FlopCounterMode): ~5 N log2 N per complex FFT of N points, halved for a real input."""
    return FBANK_FRAMES_PER_SECOND * 2.5 * FFT_SIZE * math.log2(FFT_SIZE)


def counted_flops(function) -> float:
    """FLOPs that ``function()`` runs, as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def front_end(encoder, wav, lengths):
    features, _ = encoder.extract_features(wav, lengths)
    return encoder.project(features)


def train_step(encoder, wav, lengths):
    encoder.zero_grad(set_to_none=True)
    output = encoder(wav, lengths).last_hidden_state
    output.float().pow(2).mean().backward()
    return output.shape[1]


def build(preset: str, overrides: dict, device: torch.device):
    torch.manual_seed(0)
    # layer drop off: every step runs every layer, so FLOPs and times are comparable
    return build_encoder(preset, layer_drop=0.0, **overrides).to(device).train()


def measure(size: str, args, device: torch.device) -> list[dict]:
    samples = int(args.seconds * 16000)
    generator = torch.Generator().manual_seed(0)
    wav = torch.randn(args.batch, samples, generator=generator).to(device)
    lengths = torch.full((args.batch,), samples, device=device)
    audio_seconds = args.batch * args.seconds
    encoders = {
        name: build(preset, overrides, device)
        for name, (preset, overrides) in zip(("conv", "fbank"), PAIRS[size])
    }
    rows = []
    for name, encoder in encoders.items():
        extra = fft_flops_per_second() * audio_seconds if name == "fbank" else 0.0
        front = counted_flops(lambda encoder=encoder: front_end(encoder, wav, lengths)) + extra
        with torch.no_grad():
            forward = counted_flops(lambda encoder=encoder: encoder(wav, lengths)) + extra
        step = counted_flops(lambda encoder=encoder: train_step(encoder, wav, lengths)) + extra
        rows.append(
            {
                "size": size,
                "front end": name,
                "parameters (M)": f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.2f}",
                "front end GFLOP/audio s": f"{front / audio_seconds / 1e9:.3f}",
                "forward GFLOP/audio s": f"{forward / audio_seconds / 1e9:.3f}",
                "front end share of forward": f"{front / forward:.1%}",
                "train step GFLOP/audio s": f"{step / audio_seconds / 1e9:.3f}",
            }
        )

    def front_only(encoder):
        with torch.no_grad():
            return front_end(encoder, wav, lengths)

    steps = {}
    for name, encoder in encoders.items():
        steps[f"{name} train step"] = lambda encoder=encoder: train_step(encoder, wav, lengths)
        steps[f"{name} front end"] = lambda encoder=encoder: front_only(encoder)
    timings = interleave(steps, args.repeats, device)
    for row in rows:
        name = row["front end"]
        row["train step median (s)"] = f"{timings[f'{name} train step'].median:.3f}"
        # process CPU seconds: steadier than wall time on a shared machine
        row["train step CPU median (s)"] = f"{timings[f'{name} train step'].median_cpu:.3f}"
        row["front end median (ms)"] = f"{timings[f'{name} front end'].median * 1e3:.1f}"
    for label in ("train step", "front end"):
        ratio = timings[f"fbank {label}"].median / timings[f"conv {label}"].median
        rows[1][f"fbank/conv {label} time"] = f"{ratio:.2f}"
    cpu_ratio = timings["fbank train step"].median_cpu / timings["conv train step"].median_cpu
    rows[1]["fbank/conv train step CPU"] = f"{cpu_ratio:.2f}"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"], choices=PAIRS)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each utterance")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device: {device_description(device)}; load average before: {load_average()}")
    rows = [row for size in args.sizes for row in measure(size, args, device)]
    print(markdown_table(rows))
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
