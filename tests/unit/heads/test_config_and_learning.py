import pytest
import torch

from speechssl.config import compose
from speechssl.data.collate import Batch
from speechssl.heads import (
    CONFIG_SCHEMAS,
    ClassifierHeadConfig,
    EcapaHeadConfig,
    FbankUpstream,
    LinearProbeConfig,
    build_transfer_model,
)


@pytest.mark.parametrize(
    "name, kind, pooling",
    [
        ("mean_pool", "classifier", "mean"),
        ("attentive_pool", "classifier", "attentive"),
        ("ecapa", "ecapa", None),
    ],
)
def test_head_configs_compose_and_build(name, kind, pooling):
    config = compose(overrides=[f"+head={name}", "head.mode=finetune"]).head
    assert config.kind == kind and config.mode == "finetune"
    if pooling is not None:
        assert config.pooling == pooling
    model = build_transfer_model(config, FbankUpstream(n_mels=24), num_classes=3)
    assert model.mode == "finetune" and model.head.layer_sum.num_layers == 1
    assert type(model).__name__ == (
        "SpeakerModel" if kind == "ecapa" else "UtteranceClassificationModel"
    )


def test_config_schemas_and_bad_values():
    assert CONFIG_SCHEMAS == {
        "head": {
            "classifier": ClassifierHeadConfig,
            "ecapa": EcapaHeadConfig,
            "linear_probe": LinearProbeConfig,
        }
    }
    with pytest.raises(ValueError, match="cannot compose"):
        compose(overrides=["+head=mean_pool", "head.projector_dim=wide"])
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_transfer_model(ClassifierHeadConfig(pooling="max"), FbankUpstream(n_mels=24), 3)
    # use_layer_sum=False reads only the last hidden state
    model = build_transfer_model(
        ClassifierHeadConfig(use_layer_sum=False), FbankUpstream(n_mels=24), 3
    )
    assert model.head.layer_sum is None and model.layer_weights() is None


def tone_batch(num_per_class: int, seed: int) -> Batch:
    """Four classes = four tone frequencies, random phase/amplitude, noise, random lengths."""
    generator = torch.Generator().manual_seed(seed)
    frequencies = torch.tensor([300.0, 700.0, 1500.0, 3000.0])
    labels = torch.arange(4).repeat_interleave(num_per_class)
    lengths = torch.randint(2400, 4800, (labels.numel(),), generator=generator)
    time = torch.arange(4800) / 16000
    phase = torch.rand(labels.numel(), 1, generator=generator) * 6.28
    amplitude = 0.1 + torch.rand(labels.numel(), 1, generator=generator)
    wav = amplitude * torch.sin(2 * torch.pi * frequencies[labels, None] * time + phase)
    wav = wav + 0.3 * torch.randn(wav.shape, generator=generator)
    wav = wav * (torch.arange(4800) < lengths[:, None])  # zero padding
    return Batch(wav, lengths, torch.arange(labels.numel()), labels)


def test_fbank_baseline_learns_a_separable_problem():
    torch.manual_seed(0)
    model = build_transfer_model(
        ClassifierHeadConfig(projector_dim=32), FbankUpstream(n_mels=40), 4
    )
    train, test = tone_batch(8, seed=1), tone_batch(10, seed=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(15):
        loss, _ = model(train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predictions = model.predict_proba(test.wav, test.lengths).argmax(dim=1)
    accuracy = (predictions == test.labels).float().mean().item()
    assert accuracy >= 0.8, accuracy  # chance is 0.25


def test_ecapa_speaker_model_fits_its_training_speakers():
    # held-out EER after a few steps is dominated by ECAPA's unsettled batch-norm statistics,
    # so this checks the AAM training wiring: the loss falls and the speakers are separated
    torch.manual_seed(0)
    config = EcapaHeadConfig(
        channels=[16, 16, 16, 16, 48],
        attention_channels=8,
        se_channels=8,
        res2net_scale=4,
        embedding_dim=16,
    )
    model = build_transfer_model(config, FbankUpstream(n_mels=40), num_classes=4)
    train = tone_batch(6, seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(15):
        loss, metrics = model(train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert float(metrics["accuracy"]) == 1.0  # margin-free cosine scores, chance is 0.25
