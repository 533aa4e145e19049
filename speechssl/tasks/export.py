"""``speechssl export SOURCE OUT_DIR [--format safetensors|onnx]``.

``SOURCE`` is anything :func:`speechssl.load_encoder` opens (a training checkpoint, an
export, a torchaudio / fairseq / unilm file, a Hugging Face folder, a preset name) or a
fine-tuning run folder of ``recipes/finetune/run.py`` (it holds ``model.json``).

- ``--format safetensors`` (default) writes ``model.safetensors`` + ``config.json`` that
  load with :func:`speechssl.load_encoder` and nothing of the training code; from a run
  folder, the fine-tuned encoder.
- ``--format onnx`` writes ``model.onnx`` + ``config.json`` (see
  :mod:`speechssl.encoders.onnx_export`): the encoder, or from a run folder the encoder and
  its classifier head, whose single output ``probabilities (B, C)`` follows
  ``config.json``'s ``labels`` (what ``speechssl predict`` prints, without PyTorch).

Example::

    speechssl export runs/hubert/checkpoints/last.pt exported/hubert
    speechssl export runs/finetune exported/classifier --format onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor, nn

from speechssl.encoders.onnx_export import (
    CLASSIFIER_OUTPUTS,
    EncoderGraph,
    export_onnx,
)
from speechssl.loading import load_encoder, save_encoder
from speechssl.tasks.predict import MODEL_FILE, load_run

FORMATS = ("safetensors", "onnx")


class ClassifierGraph(nn.Module):
    """``(waveform (B, T), lengths (B,)) -> probabilities (B, C)`` of a fine-tuned run."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, waveform: Tensor, lengths: Tensor) -> Tensor:
        return torch.softmax(self.model.logits(waveform, lengths), dim=-1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a checkpoint, export, public encoder file or folder, or a fine-tuning run folder",
    )
    parser.add_argument("out_dir", help="directory to write the export to")
    parser.add_argument(
        "--format",
        default="safetensors",
        help="safetensors (default: model.safetensors + config.json) or onnx (model.onnx + config.json)",
    )


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    source = Path(args.checkpoint)
    if (source / MODEL_FILE).is_file():
        return _export_run(source, Path(args.out_dir), args.format)
    encoder = load_encoder(args.checkpoint)
    parameters = sum(parameter.numel() for parameter in encoder.parameters())
    if args.format == "onnx":
        spec = encoder.spec()
        out_dir = export_onnx(
            EncoderGraph(encoder), args.out_dir, family=spec["family"], config=spec["config"]
        )
    else:
        out_dir = save_encoder(encoder, args.out_dir)
    print(
        f"exported {encoder.family} encoder ({parameters / 1e6:.1f} M parameters) to {out_dir} "
        f"({args.format})"
    )
    return 0


def _export_run(run_dir: Path, out_dir: Path, export_format: str) -> int:
    loaded = load_run(run_dir)
    encoder = loaded.model.encoder
    if export_format == "safetensors":
        save_encoder(encoder, out_dir)
        print(f"exported the fine-tuned {encoder.family} encoder of {run_dir} to {out_dir}")
        return 0
    spec = encoder.spec()
    export_onnx(
        ClassifierGraph(loaded.model),
        out_dir,
        family=spec["family"],
        config=spec["config"],
        output_names=CLASSIFIER_OUTPUTS,
        extra={"labels": loaded.labels, "head": loaded.info["head"]},
    )
    print(
        f"exported the {encoder.family} encoder + classifier ({len(loaded.labels)} classes) of "
        f"{run_dir} to {out_dir} (onnx)"
    )
    return 0
