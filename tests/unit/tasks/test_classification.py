"""Transfer upstreams: baselines differ from the pre-trained encoder only where they should."""

import pytest
import torch

from speechssl.encoders import build_encoder
from speechssl.heads import ClassifierHeadConfig, build_transfer_model
from speechssl.loading import save_encoder
from speechssl.tasks.classification import TRANSFER_MODES, upstream_factory


@pytest.fixture()
def pretrained(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("tpc_tiny", normalization="global").train()
    encoder.features(torch.randn(3, 16000), torch.tensor([16000, 12000, 9000]))  # CMVN stats
    save_encoder(encoder, tmp_path / "export")
    return encoder, tmp_path / "export"


def test_random_baseline_shares_the_front_end_statistics_but_not_the_weights(pretrained):
    encoder, path = pretrained
    make_encoder, head_mode = upstream_factory("random_frozen", encoder.spec(), path, seed=1)
    random_encoder = make_encoder()
    assert head_mode == "frozen"
    random_state = random_encoder.state_dict()
    for key, value in encoder.state_dict().items():
        if key.startswith("front_end."):
            assert torch.equal(value, random_state[key]), key
        elif key.endswith("weight") and value.dim() == 2:  # randomly initialised matrices
            assert not torch.equal(value, random_state[key]), key
    assert float(random_encoder.front_end.normalize.count) == pytest.approx(
        float(encoder.front_end.normalize.count)
    )


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
