"""``speechssl export CHECKPOINT OUT_DIR``: write ``model.safetensors`` + ``config.json``.

The export loads with :func:`speechssl.load_encoder` (or ``torch.hub``) and nothing of the
training code::

    speechssl export runs/hubert/checkpoints/last.pt exported/hubert
    python -c "import speechssl; print(speechssl.load_encoder('exported/hubert'))"
"""

from __future__ import annotations

import argparse

from speechssl.loading import load_encoder, save_encoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt) or an existing export")
    parser.add_argument("out_dir", help="directory to write model.safetensors and config.json to")


def run(args: argparse.Namespace) -> int:
    encoder = load_encoder(args.checkpoint)
    out_dir = save_encoder(encoder, args.out_dir)
    parameters = sum(parameter.numel() for parameter in encoder.parameters())
    print(f"exported {encoder.family} encoder ({parameters / 1e6:.1f} M parameters) to {out_dir}")
    return 0
