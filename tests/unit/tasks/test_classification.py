"""Transfer upstreams: baselines differ from the pre-trained encoder only where they should."""

import pytest
import torch

from speechssl.encoders import build_encoder
from speechssl.heads import ClassifierHeadConfig, build_transfer_model
from speechssl.loading import save_encoder
from speechssl.tasks.classification import TRANSFER_MODES, upstream_factory


def _trained_looking(preset: str, folder):
    """An encoder with running CMVN statistics, saved under ``folder``."""
    torch.manual_seed(0)
    encoder = build_encoder(preset, normalization="global").train()
    encoder(torch.randn(3, 16000), torch.tensor([16000, 12000, 9000]))  # CMVN statistics
    save_encoder(encoder, folder)
    return encoder, folder


@pytest.fixture()
def pretrained(tmp_path):
    return _trained_looking("tpc_tiny", tmp_path / "export")


def _normalize(encoder):
    front_end = getattr(encoder, "front_end", None) or encoder.feature_extractor.front_end
    return front_end.normalize


@pytest.mark.parametrize("preset", ["tpc_tiny", "hubert_mel_tiny"])
def test_random_baseline_shares_the_front_end_statistics_but_not_the_weights(preset, tmp_path):
    # the filterbank Transformer keeps them at front_end.normalize, the mel-input HuBERT at
    # feature_extractor.front_end.normalize
    encoder, path = _trained_looking(preset, tmp_path / "export")
    make_encoder, head_mode = upstream_factory("random_frozen", encoder.spec(), path, seed=1)
    random_encoder = make_encoder()
    assert head_mode == "frozen"
    random_state = random_encoder.state_dict()
    assert float(_normalize(encoder).count) > 0
    for key, value in encoder.state_dict().items():
        if ".front_end." in f".{key}":
            assert torch.equal(value, random_state[key]), key
        elif key.endswith("weight") and value.dim() == 2:  # randomly initialised matrices
            assert not torch.equal(value, random_state[key]), key
    assert float(_normalize(random_encoder).count) == float(_normalize(encoder).count)


def test_every_mode_builds_and_pretrained_modes_reload_the_weights(pretrained):
    encoder, path = pretrained
    for mode in TRANSFER_MODES:
        make_encoder, head_mode = upstream_factory(mode, encoder.spec(), path, n_mels=40)
        built = make_encoder()
        assert head_mode == ("finetune" if mode.endswith("finetune") else "frozen")
        if mode.startswith("pretrained"):
            assert torch.equal(built.input_projection.weight, encoder.input_projection.weight)
    with pytest.raises(ValueError, match="unknown transfer mode"):
        upstream_factory("pretrained", encoder.spec(), path)
    with pytest.raises(ValueError, match="needs a pre-trained checkpoint"):
        upstream_factory("pretrained_frozen", encoder.spec(), None)


def test_finetuning_keeps_the_pretraining_normalisation_statistics(pretrained):
    encoder, _ = pretrained
    model = build_transfer_model(
        ClassifierHeadConfig(mode="finetune", projector_dim=8), encoder, num_classes=2
    ).train()
    count = float(encoder.front_end.normalize.count)
    model.logits(torch.randn(2, 16000) * 5, torch.tensor([16000, 16000]))
    assert float(encoder.front_end.normalize.count) == count
    assert model.encoder.training and not model.encoder.front_end.training
