"""Which preset is which: one row per encoder preset, read from the registry.

:func:`preset_rows` builds every preset of :data:`speechssl.encoders.PRESETS` on the
``meta`` device (shapes, no memory) to count its parameters, and reads its output frame
rate from its config (``config.frame_rate``, the waveform-CNN families) or, where the
family declares none, measures it: the difference in output frames of a one-layer copy
between two clip lengths. ``speechssl presets`` prints :func:`preset_table`; the
README's preset table is this table (``tests/test_readme_examples.py`` checks it).

Example:
    >>> rows = preset_rows(["hubert_tiny", "tpc_tiny"])
    >>> [(row.name, row.family, row.size, row.frame_rate) for row in rows]
    [('hubert_tiny', 'wav2vec2', 'tiny', 50.0), ('tpc_tiny', 'predictive_transformer', 'tiny', 100.0)]
    >>> rows[0].parameters
    102544
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import NamedTuple

import torch

from speechssl.encoders import PRESETS, build_config, build_encoder

__all__ = ["PresetRow", "add_arguments", "preset_rows", "preset_table", "run"]

SAMPLE_RATE = 16000
# two clip lengths whose difference holds a whole number of frames at 25, 50 and 100 Hz
_SHORT, _LONG = 2560, 5120
_SIZE = re.compile(r"(tiny|small|base_plus|base|large)$")


class PresetRow(NamedTuple):
    """One preset: registry name, family, size tier, layers, width, parameters, frames/s."""

    name: str
    family: str
    size: str
    layers: int
    dim: int
    parameters: int
    frame_rate: float


def _frame_rate(name: str, config) -> float:
    declared = getattr(config, "frame_rate", None)
    if declared is not None:
        return float(declared)
    # one layer is enough: the frame rate is the front end's
    encoder = build_encoder(name, num_layers=1).eval()
    with torch.no_grad():
        # (2, T): a half-length and a full-length clip in one padded batch
        short, long = encoder(torch.zeros(2, _LONG), torch.tensor([_SHORT, _LONG])).lengths.tolist()
    return (long - short) * SAMPLE_RATE / (_LONG - _SHORT)


def preset_rows(names: Iterable[str] | None = None) -> list[PresetRow]:
    """A :class:`PresetRow` per preset (all of :data:`PRESETS` by default, in its order)."""
    rows = []
    for name in PRESETS if names is None else names:
        config = build_config(name)
        with torch.device("meta"):  # shapes only: a Large preset allocates nothing
            encoder = build_encoder(name)
        size = _SIZE.search(name)
        rows.append(
            PresetRow(
                name=name,
                family=config.family,
                # a bare family name (``apc``) is an alias of its base preset
                size=size.group(1) if size else "base",
                layers=encoder.num_layers,
                dim=encoder.output_dim,
                parameters=sum(parameter.numel() for parameter in encoder.parameters()),
                frame_rate=_frame_rate(name, config),
            )
        )
    return rows


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count < 10_000_000 else f"{count / 1e6:.1f} M"


def preset_table(rows: Iterable[PresetRow] | None = None) -> str:
    """The presets as a Markdown table (the README's, and what ``speechssl presets`` prints)."""
    lines = [
        "| preset | family | size | layers × dim | parameters | frame rate |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in preset_rows() if rows is None else rows:
        lines.append(
            f"| `{row.name}` | {row.family} | {row.size} | {row.layers} × {row.dim} "
            f"| {_millions(row.parameters)} | {row.frame_rate:g} Hz |"
        )
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``speechssl presets``."""
    parser.add_argument("names", nargs="*", help="presets to list (default: all)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``speechssl presets``: print the table."""
    unknown = [name for name in args.names if name not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset {unknown[0]!r}; presets: {', '.join(PRESETS)}")
    print(preset_table(preset_rows(args.names or None)), end="")
    return 0
