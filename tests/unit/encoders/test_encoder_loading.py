"""load_encoder, `speechssl export` and torch.hub: round trips and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechssl.cli import main as cli_main
from speechssl.encoders import build_encoder
from speechssl.loading import load_encoder, save_encoder

REPO_ROOT = Path(__file__).resolve().parents[3]


class PretrainingModel(torch.nn.Module):
    """What a Trainer checkpoints: an objective around ``model.encoder``."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.output_dim, 5)


def training_checkpoint(path: Path, name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = PretrainingModel(build_encoder(name))
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": {},
            "step": 3,
            "config": {"encoder": {"family": model.encoder.family}},
            "encoder_spec": {**model.encoder.spec(), "prefix": "encoder."},
        },
        path,
    )
    return model.encoder.eval()


def outputs(encoder):
    wav = torch.randn(2, 6000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return encoder(wav, torch.tensor([6000, 3100])).last_hidden_state


@pytest.mark.parametrize("name", ["hubert_tiny", "hubert_mel_tiny", "tpc_tiny", "apc_tiny"])
def test_checkpoint_to_export_to_load_round_trip(tmp_path, name):
    original = training_checkpoint(tmp_path / "last.pt", name)
    from_checkpoint = load_encoder(tmp_path / "last.pt")
    assert not from_checkpoint.training
    assert torch.equal(outputs(from_checkpoint), outputs(original))

    assert cli_main(["export", str(tmp_path / "last.pt"), str(tmp_path / "export")]) == 0
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert set(config) == {"family", "config", "speechssl_version"}
    for path in (
        tmp_path / "export",
        tmp_path / "export" / "model.safetensors",
        tmp_path / "export" / "config.json",
    ):
        assert torch.equal(outputs(load_encoder(path)), outputs(original))


def test_torch_hub_loads_from_a_local_clone(tmp_path):
    encoder = build_encoder("hubert_tiny").eval()
    save_encoder(encoder, tmp_path / "export")
    loaded = torch.hub.load(
        str(REPO_ROOT), "encoder", path=str(tmp_path / "export"), source="local"
    )
    assert torch.equal(outputs(loaded), outputs(encoder))
    fresh = torch.hub.load(str(REPO_ROOT), "tpc_tiny", source="local", num_layers=1)
    assert fresh.num_layers == 1


def test_load_errors_are_clear(tmp_path):
    training_checkpoint(tmp_path / "last.pt", "hubert_tiny")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "last.pt").read_bytes()[:3000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_encoder(truncated)

    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    checkpoint["encoder_spec"]["family"] = "wavlm_xl"
    torch.save(checkpoint, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="unknown encoder family 'wavlm_xl'"):
        load_encoder(tmp_path / "unknown.pt")

    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    del checkpoint["model"]["encoder.mask_embedding"]
    del checkpoint["model"]["encoder.layer_norm.bias"]
    torch.save(checkpoint, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="encoder.*layer_norm.bias, mask_embedding"):
        load_encoder(tmp_path / "missing.pt")

    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    del checkpoint["encoder_spec"]
    torch.save(checkpoint, tmp_path / "no_spec.pt")
    with pytest.raises(ValueError, match="no encoder_spec"):
        load_encoder(tmp_path / "no_spec.pt")

    save_encoder(build_encoder("tpc_tiny"), tmp_path / "export")
    weights = tmp_path / "export" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt safetensors"):
        load_encoder(tmp_path / "export")
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "nothing_here")
    # the CLI turns the same failure into one line and exit code 1
    assert cli_main(["export", str(truncated), str(tmp_path / "out")]) == 1


def test_fbank_baseline_checkpoint_rebuilds_through_load_encoder(tmp_path):
    """The FBANK baseline is an encoder family too, so a run trained on it can be reloaded."""
    from speechssl.encoders import FbankUpstream, build_encoder
    from speechssl.loading import save_encoder

    upstream = FbankUpstream(n_mels=40)
    rebuilt = build_encoder(upstream.spec())
    wav, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    assert torch.equal(
        upstream(wav, lengths).last_hidden_state, rebuilt(wav, lengths).last_hidden_state
    )
    save_encoder(upstream, tmp_path / "export")
    loaded = load_encoder(tmp_path / "export")
    assert isinstance(loaded, FbankUpstream) and loaded.config.n_mels == 40


def test_the_door_reads_each_file_once_and_names_what_it_cannot_read(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from speechssl.encoders.wavlm import convert as wavlm_convert
    from speechssl.loading import open_encoder

    torch.manual_seed(0)
    wavlm = build_encoder("wavlm_tiny", num_layers=1)
    payload = wavlm_convert.to_unilm_checkpoint(wavlm)
    # a fairseq-style file: the config pickled as omegaconf nodes, refused by plain
    # weights-only loading, read here in one torch.load with those classes allowed
    torch.save(
        {"cfg": OmegaConf.create({"model": payload["cfg"]}), "model": payload["model"]},
        tmp_path / "w.pt",
    )
    calls = []
    real_load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda *args, **kwargs: calls.append(args) or real_load(*args, **kwargs)
    )
    opened = open_encoder(tmp_path / "w.pt")
    assert opened.kind == "unilm" and len(calls) == 1
    loaded = opened.encoder.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in wavlm.state_dict().items())
    monkeypatch.undo()

    # a large dict of tensors of no known layout: one short line saying what it holds
    torch.save({f"block{i}.weight": torch.zeros(2) for i in range(300)}, tmp_path / "odd.pt")
    with pytest.raises(ValueError) as error:
        load_encoder(tmp_path / "odd.pt")
    message = str(error.value)
    assert "\n" not in message and len(message) < 300 + len(str(tmp_path))
    assert "300 entries (300 tensors)" in message and "'block0.weight'" in message
    # a training checkpoint without its encoder_spec: short too, whatever its size
    training_checkpoint(tmp_path / "last.pt", "hubert_tiny")
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    del checkpoint["encoder_spec"]
    torch.save(checkpoint, tmp_path / "no_spec.pt")
    with pytest.raises(ValueError, match="no encoder_spec") as error:
        load_encoder(tmp_path / "no_spec.pt")
    assert len(str(error.value)) < 250 + len(str(tmp_path))
    # presets draw their weights from the seed and leave the global generator alone
    state = torch.random.get_rng_state()
    first, second = load_encoder("wavlm_tiny", seed=3), load_encoder("wavlm_tiny", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values())
    )
