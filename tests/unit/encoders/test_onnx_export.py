"""ONNX export of every exportable encoder family: onnxruntime's outputs equal PyTorch's
eval outputs (<= 1e-4) at two batch sizes and three lengths, one longer than the example
the graph was captured with; no training-only random op is in the graph; the CLI exports
a training checkpoint and refuses a bad ``--format`` or an unexportable family in one line.

Every family is built small (random weights, one or two layers); nothing is downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speechssl.cli import main as cli_main
from speechssl.encoders import build_encoder
from speechssl.encoders.onnx_export import (
    ENCODER_OUTPUTS,
    NOT_EXPORTABLE,
    ONNX_NAME,
    EncoderGraph,
    export_onnx,
)
from speechssl.loading import load_encoder

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4
EXAMPLE_SECONDS = 0.5  # the export's example batch: 8000 samples
# (batch size, samples): two batch sizes, three lengths, 40000 longer than the example
CASES = [(1, 4000), (3, 12000), (3, 40000), (1, 40000)]
# one preset per family, shrunk; training-only randomness (dropout, layer drop) left on.
# wav2vec2 (HuBERT) goes through the CLI in the last test: each export costs seconds.
FAMILIES = {
    "wavlm": ("wavlm_tiny", {"num_layers": 2, "layer_drop": 0.5}),
    "fbank_transformer": ("fbank_transformer_tiny", {"num_layers": 1}),
    "conformer": ("conformer_tiny", {"num_layers": 1}),
    "predictive_transformer": ("tpc_tiny", {"num_layers": 1}),
    "fbank": ("fbank", {"n_mels": 40}),
}
RANDOM_OPS = {
    "Dropout",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
}


def batch(batch_size: int, samples: int, seed: int):
    """A zero-padded batch whose last item is about half as long as the others."""
    generator = torch.Generator().manual_seed(seed)
    wav = torch.randn(batch_size, samples, generator=generator)
    lengths = torch.full((batch_size,), samples)
    if batch_size > 1:
        lengths[-1] = samples // 2 + 123
        wav[-1, lengths[-1] :] = 0.0
    return wav, lengths


def assert_same_as_pytorch(encoder, session, seed: int = 0):
    graph = EncoderGraph(encoder).eval()
    for index, (batch_size, samples) in enumerate(CASES):
        wav, lengths = batch(batch_size, samples, seed + index)
        with torch.no_grad():
            expected = graph(wav, lengths)
        outputs = session.run(None, {"waveform": wav.numpy(), "lengths": lengths.numpy()})
        for name, ours, theirs in zip(ENCODER_OUTPUTS, outputs, expected):
            assert ours.shape == tuple(theirs.shape), (name, batch_size, samples)
            if not ours.size:
                continue
            difference = float(np.abs(ours - theirs.numpy()).max())
            # 1e-4, relative to the output's scale where it exceeds 1: filterbank front ends
            # reach their float32 FFT's rounding (~5e-6 of TPC's ~20-wide input embedding)
            scale = max(1.0, float(theirs.abs().max()))
            assert difference <= TOLERANCE * scale, (name, batch_size, samples, difference, scale)


def session_for(folder):
    return onnxruntime.InferenceSession(str(folder / ONNX_NAME), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_matches_pytorch_eval(tmp_path, family):
    preset, overrides = FAMILIES[family]
    torch.manual_seed(0)
    encoder = build_encoder(preset, **overrides).eval()
    assert encoder.family == family
    spec = encoder.spec()
    export_onnx(
        EncoderGraph(encoder),
        tmp_path,
        family=family,
        config=spec["config"],
        example_seconds=EXAMPLE_SECONDS,
    )
    assert_graph_is_clean(tmp_path, family)
    assert_same_as_pytorch(encoder, session_for(tmp_path))


def test_mel_input_hubert_exports_with_its_filterbank_front_end(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("hubert_mel_tiny", num_layers=1).eval()
    export_onnx(
        EncoderGraph(encoder),
        tmp_path,
        family=encoder.family,
        config=encoder.spec()["config"],
        example_seconds=EXAMPLE_SECONDS,
    )
    assert_graph_is_clean(tmp_path, "wav2vec2")
    assert_same_as_pytorch(encoder, session_for(tmp_path))


def assert_graph_is_clean(folder, family):
    model = onnx.load(str(folder / ONNX_NAME))
    assert [node.name for node in model.graph.input] == ["waveform", "lengths"]
    assert [node.name for node in model.graph.output] == list(ENCODER_OUTPUTS)
    assert not RANDOM_OPS & {node.op_type for node in model.graph.node}
    config = json.loads((folder / "config.json").read_text())
    assert config["family"] == family and config["format"] == "onnx"


def test_cli_exports_a_training_checkpoint_and_refuses_bad_requests(tmp_path, capsys):
    torch.manual_seed(1)
    encoder = build_encoder("hubert_tiny", num_layers=2, layer_drop=0.5)
    torch.save(
        {
            "model": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
            "encoder_spec": {**encoder.spec(), "prefix": "encoder."},
        },
        tmp_path / "last.pt",
    )
    capsys.readouterr()
    assert (
        cli_main(["export", str(tmp_path / "last.pt"), str(tmp_path / "out"), "--format", "onnx"])
        == 0
    )
    assert "(onnx)" in capsys.readouterr().out
    assert_graph_is_clean(tmp_path / "out", "wav2vec2")
    assert_same_as_pytorch(
        load_encoder(tmp_path / "last.pt"), session_for(tmp_path / "out"), seed=5
    )

    assert (
        cli_main(["export", str(tmp_path / "last.pt"), str(tmp_path / "bad"), "--format", "tflite"])
        == 1
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--format must be one of safetensors, onnx" in error[0]

    assert "apc" in NOT_EXPORTABLE
    assert cli_main(["export", "apc_tiny", str(tmp_path / "apc"), "--format", "onnx"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "apc encoder cannot be exported to ONNX" in error[0], error
    assert not (tmp_path / "apc").exists()
