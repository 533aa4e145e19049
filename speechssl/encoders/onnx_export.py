"""ONNX export of an encoder (or an encoder + classifier head) with dynamic batch and length.

:func:`export_onnx` writes ``model.onnx`` and ``config.json`` into a folder. The graph's
inputs are ``waveform (B, T)`` float32 and ``lengths (B,)`` int64; an encoder's outputs are
``last_hidden_state (B, F, D)``, ``hidden_states (L + 1, B, F, D)`` (the
:class:`~speechssl.encoders.base.EncoderOutput` tuple stacked; entry 0 is the input to the
first layer) and ``lengths (B,)`` frames. Batch, samples and frames are dynamic axes.

The graph is captured by ``torch.export`` (``torch.onnx.export(dynamo=True)``) in eval mode:
layer drop, dropout and every other training-only random op are Python branches on
``self.training`` and never enter the graph, and shape arithmetic stays symbolic, so a
length longer than any seen at export runs too. Data-dependent Python loops (the eager
per-item group norm) take their traceable path under capture.

Example (``onnxruntime`` is a dev dependency, not needed to export)::

    from speechssl import load_encoder
    from speechssl.encoders.onnx_export import export_onnx
    export_onnx(load_encoder("runs/hubert/checkpoints/last.pt"), "exported/hubert_onnx")
    # onnxruntime.InferenceSession("exported/hubert_onnx/model.onnx").run(
    #     None, {"waveform": wav.numpy(), "lengths": lengths.numpy()})
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .base import Encoder

__all__ = [
    "CLASSIFIER_OUTPUTS",
    "ENCODER_OUTPUTS",
    "INPUTS",
    "NOT_EXPORTABLE",
    "ONNX_NAME",
    "EncoderGraph",
    "export_onnx",
]

ONNX_NAME = "model.onnx"
INPUTS = ("waveform", "lengths")
ENCODER_OUTPUTS = ("last_hidden_state", "hidden_states", "lengths_out")
CLASSIFIER_OUTPUTS = ("probabilities",)
OPSET = 18

# families whose graph cannot be exported, and why (README "ONNX export" lists them)
NOT_EXPORTABLE: dict[str, str] = {
    "apc": (
        "torch.export unrolls nn.GRU over the example's number of frames, so the graph "
        "could not take another length"
    ),
}


class EncoderGraph(nn.Module):
    """``(waveform (B, T), lengths (B,)) -> (last_hidden_state, hidden_states (L+1, B, F, D),
    lengths (B,))``: an encoder's output as plain tensors, what an ONNX graph returns."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        output = self.encoder(waveform, lengths)
        # tuple of L + 1 tensors (B, F, D) -> (L + 1, B, F, D)
        return output.last_hidden_state, torch.stack(output.hidden_states), output.lengths


def export_onnx(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    family: str,
    config: dict,
    output_names: tuple[str, ...] = ENCODER_OUTPUTS,
    extra: dict | None = None,
    sample_rate: int = 16000,
    example_seconds: float = 1.0,
) -> Path:
    """Export ``model`` (``forward(waveform, lengths)``; :class:`EncoderGraph` for an
    encoder) to ``out_dir/model.onnx`` and describe it in ``out_dir/config.json``.

    Args:
        model: the module to capture; put in eval mode here.
        out_dir: folder to write (created).
        family: the encoder family (refused when in :data:`NOT_EXPORTABLE`).
        config: the encoder config dict, written to ``config.json``.
        output_names: the graph's output names.
        extra: more ``config.json`` entries (e.g. a classifier's ``labels``).
        sample_rate: the rate the waveform input must have.
        example_seconds: length of the example batch the graph is captured with.

    Raises:
        ValueError: a family that cannot export, or a failed capture (one line).
    """
    if family in NOT_EXPORTABLE:
        raise ValueError(
            f"the {family} encoder cannot be exported to ONNX: {NOT_EXPORTABLE[family]}"
        )
    model = model.eval()
    samples = int(example_seconds * sample_rate)
    # two items of different lengths, so no length is specialised as a constant
    waveform = torch.randn(2, samples)
    lengths = torch.tensor([samples, samples * 3 // 4])
    batch = torch.export.Dim("batch", min=1, max=1024)
    time = torch.export.Dim("samples", min=2000, max=sample_rate * 3600)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (waveform, lengths),
                dynamo=True,
                input_names=list(INPUTS),
                output_names=list(output_names),
                dynamic_shapes={"waveform": {0: batch, 1: time}, "lengths": {0: batch}},
                opset_version=OPSET,
                verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - the exporter raises many kinds; report one line
        reason = " ".join(str(error).split())[:300]
        raise ValueError(
            f"the {family} encoder could not be exported to ONNX ({type(error).__name__}: {reason})"
        ) from None
    program.save(str(out_dir / ONNX_NAME))
    description = {
        "format": "onnx",
        "family": family,
        "config": config,
        "sample_rate": sample_rate,
        "inputs": {"waveform": "float32 (batch, samples)", "lengths": "int64 (batch,) samples"},
        "outputs": list(output_names),
        "opset": OPSET,
        **(extra or {}),
    }
    (out_dir / "config.json").write_text(json.dumps(description, indent=2) + "\n")
    return out_dir
