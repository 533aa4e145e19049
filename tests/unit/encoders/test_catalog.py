"""``speechssl presets``: the registry's presets with their true sizes and frame rates."""

from __future__ import annotations

import pytest
import torch

from speechssl.cli import main
from speechssl.encoders import build_config, build_encoder
from speechssl.encoders.catalog import _frame_rate, preset_rows


@pytest.mark.parametrize("name", ["hubert_tiny", "hubert_mel_tiny", "wavlm_tiny"])
def test_a_declared_frame_rate_is_the_measured_one(name):
    config = build_config(name)
    assert config.frame_rate is not None
    measured = _frame_rate(name, type("Undeclared", (), {})())  # no frame_rate: measured
    assert measured == config.frame_rate


def test_rows_count_the_real_parameters():
    (row,) = preset_rows(["conformer_tiny"])
    encoder = build_encoder("conformer_tiny")
    assert row.parameters == sum(p.numel() for p in encoder.parameters())
    assert (row.layers, row.dim) == (encoder.num_layers, encoder.output_dim)
    with torch.no_grad():  # 1 s of audio at 25 Hz: about 25 frames
        frames = encoder.eval()(torch.zeros(1, 16000), torch.tensor([16000])).lengths.item()
    assert abs(frames - row.frame_rate) <= 2


def test_the_command_prints_the_rows_asked_for(capsys):
    assert main(["presets", "tpc_tiny", "apc_tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| preset |") and len(lines) == 4
    assert "| `tpc_tiny` | predictive_transformer | tiny | 2 × 64 |" in lines[2]
    assert main(["presets", "no_such_preset"]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "unknown preset 'no_such_preset'" in error
