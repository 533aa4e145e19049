import pytest
import torch

from speechssl.data.collate import Batch
from speechssl.encoders import build_encoder
from speechssl.encoders.base import Encoder
from speechssl.heads import (
    ECAPAHead,
    SpeakerModel,
    UtteranceClassificationModel,
    UtteranceClassifier,
)


def tiny_encoder() -> Encoder:
    torch.manual_seed(0)
    return build_encoder("hubert_tiny")  # the real HuBERT encoder, laptop-sized


def make_batch(batch_size=3, num_samples=4000, num_classes=4) -> Batch:
    generator = torch.Generator().manual_seed(1)
    wav = torch.randn(batch_size, num_samples, generator=generator)
    lengths = torch.tensor([num_samples] + [num_samples - 700 * i for i in range(1, batch_size)])
    for row, length in enumerate(lengths.tolist()):
        wav[row, length:] = 0
    labels = torch.arange(batch_size) % num_classes
    return Batch(wav, lengths, torch.arange(batch_size), labels)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed_names(before: dict, module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}


def classifier_model(mode: str, **kwargs) -> UtteranceClassificationModel:
    encoder = tiny_encoder()
    head = UtteranceClassifier(
        encoder.output_dim, 4, projector_dim=16, num_layers=encoder.num_layers + 1
    )
    return UtteranceClassificationModel(encoder, head, mode=mode, **kwargs)


def one_step(model, batch, lr=1e-2):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    loss, metrics = model(batch)
    loss.backward()
    optimizer.step()
    return loss, metrics


def test_frozen_mode_trains_only_the_head():
    model = classifier_model("frozen")
    encoder_before, head_before = snapshot(model.encoder), snapshot(model.head)
    loss, metrics = one_step(model, make_batch())
    assert loss.ndim == 0 and 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert not model.encoder.training  # train() keeps a frozen encoder in eval mode
    assert changed_names(encoder_before, model.encoder) == set()
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert changed_names(head_before, model.head) == set(head_before)  # layer sum included


def test_finetune_mode_trains_encoder_but_not_conv_front_end():
    model = classifier_model("finetune", freeze_feature_extractor=True)
    encoder_before = snapshot(model.encoder)
    one_step(model, make_batch())
    assert model.encoder.training
    changed = changed_names(encoder_before, model.encoder)
    front_end = {name for name in encoder_before if name.startswith("feature_extractor.")}
    assert front_end and not (changed & front_end)
    # mask_embedding is only used by pre-training objectives; everything else in use moves
    assert changed >= set(encoder_before) - front_end - {"mask_embedding"}
    # the Trainer's per-prefix learning rates rely on these two name prefixes
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith(("encoder.", "head.")) for name in names)
    assert any(name.startswith("encoder.") for name in names)


def test_finetune_without_freezing_moves_the_front_end():
    model = classifier_model("finetune", freeze_feature_extractor=False)
    before = snapshot(model.encoder.feature_extractor)
    one_step(model, make_batch())
    assert changed_names(before, model.encoder.feature_extractor)


def test_predict_proba_and_errors():
    model = classifier_model("frozen")
    model.train()
    batch = make_batch()
    probabilities = model.predict_proba(batch.wav, batch.lengths)
    assert probabilities.shape == (3, 4)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(3))
    assert model.training and not model.encoder.training  # mode restored
    with pytest.raises(ValueError, match="batch.labels is None"):
        model(Batch(batch.wav, batch.lengths, batch.indices, None))
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match="num_layers=3"):
        UtteranceClassificationModel(encoder, UtteranceClassifier(64, 4, num_layers=2))
    with pytest.raises(ValueError, match="mode must be one of"):
        UtteranceClassificationModel(encoder, UtteranceClassifier(64, 4), mode="linear")


def test_speaker_model_trains_head_and_embeds():
    encoder = tiny_encoder()
    head = ECAPAHead(
        encoder.output_dim,
        num_speakers=3,
        num_layers=encoder.num_layers + 1,
        channels=(16, 16, 16, 16, 48),
        attention_channels=8,
        se_channels=8,
        res2net_scale=4,
        embedding_dim=12,
    )
    model = SpeakerModel(encoder, head, mode="frozen")
    head_before = snapshot(model.head)
    batch = make_batch(num_classes=3)
    loss, metrics = one_step(model, batch)
    assert torch.isfinite(loss) and "accuracy" in metrics
    assert "layer_sum.logits" in changed_names(head_before, model.head)
    embeddings = model.embed(batch.wav, batch.lengths)
    assert embeddings.shape == (3, 12)
    # the unpadded row embeds the same alone as inside the batch (no mixing across rows)
    single = model.embed(batch.wav[:1], batch.lengths[:1])
    torch.testing.assert_close(single, embeddings[:1], atol=1e-4, rtol=1e-4)
    # padded values never reach an embedding
    noisy = batch.wav.clone()
    noisy[2, batch.lengths[2] :] = 0.5
    torch.testing.assert_close(model.embed(noisy, batch.lengths), embeddings, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.predict_proba(batch.wav, batch.lengths).sum(1), torch.ones(3))
    assert model.layer_weights().shape == (3,)
    # ECAPA's batch norm cannot train on one row: one clear line instead of torch's error
    model.train()
    with pytest.raises(ValueError, match="ECAPA's batch norm needs >= 2 utterances"):
        model(make_batch(batch_size=1, num_classes=3))
