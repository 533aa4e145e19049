"""HuBERT masked prediction: parity with torchaudio's HuBERTPretrainModel + HuBERT loss,
fairseq masking semantics, label alignment and padding invariance."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchaudio.models.wav2vec2.components import _compute_mask_indices

from speechssl.encoders import build_encoder
from speechssl.encoders.wav2vec2.convert import from_torchaudio
from speechssl.objectives.masked_prediction import (
    ContrastiveConfig,
    HubertPretrainModel,
    MaskedPredictionConfig,
    MixingConfig,
    align_labels,
    compute_span_mask,
)
from speechssl.testing import small_hubert_pretrain_reference

NUM_CLASSES = 50
FINAL_DIM = 32


def reference_hubert_loss(logit_m, logit_u, feature_pen, masked_weight=1.0, unmasked_weight=0.0):
    """torchaudio's examples/hubert/loss/hubert_loss.py (not shipped in the wheel, so
    restated here): CE sums with the positive in column 0, plus feature_pen * 10 * N_m;
    the lightning module divides by the number of masked frames."""
    loss = feature_pen * 10.0 * logit_m.shape[0]
    loss = (
        loss
        + F.cross_entropy(logit_m, torch.zeros(len(logit_m), dtype=torch.long), reduction="sum")
        * masked_weight
    )
    loss = (
        loss
        + F.cross_entropy(logit_u, torch.zeros(len(logit_u), dtype=torch.long), reduction="sum")
        * unmasked_weight
    )
    return loss / logit_m.shape[0]


class FixedMask(torch.nn.Module):
    """Stands in for torchaudio's MaskGenerator: writes its mask embedding into a given mask."""

    def __init__(self, mask_embedding: torch.nn.Parameter):
        super().__init__()
        self.mask_embedding = mask_embedding
        self.mask = None

    def forward(self, x, padding_mask):
        x = x.clone()
        x[self.mask] = self.mask_embedding.to(x.dtype)
        return x, self.mask


@pytest.fixture(scope="module")
def reference_and_ours():
    """A reduced hubert_pretrain_base(): Base conv strides/kernels and post-LN layout, narrower
    and shallower for CPU speed; no dropout so both sides compute the same function."""
    torch.manual_seed(0)
    reference = small_hubert_pretrain_reference(64, 96, 3, 192, NUM_CLASSES, final_dim=FINAL_DIM)
    encoder = from_torchaudio(reference.wav2vec2)  # torchaudio's padded group-norm statistics
    encoder.config.feature_grad_mult = 0.1
    encoder.mask_embedding.data.copy_(reference.mask_generator.mask_embedding.data)
    reference.mask_generator = FixedMask(reference.mask_generator.mask_embedding)
    config = MaskedPredictionConfig(num_classes=[NUM_CLASSES], final_dim=FINAL_DIM)
    ours = HubertPretrainModel(encoder, config)
    ours.final_proj.load_state_dict(reference.logit_generator.final_proj.state_dict())
    ours.label_embeddings.data.copy_(reference.logit_generator.label_embeddings.data)
    return reference.train(), ours.train()


def _batch(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    wav = torch.randn(len(lengths), int(lengths.max()), generator=generator)
    wav = wav * (torch.arange(wav.shape[1])[None] < lengths[:, None])
    return wav, lengths


def test_logits_loss_and_gradients_match_torchaudio(reference_and_ours):
    reference, ours = reference_and_ours
    wav, lengths = _batch([8000, 8000, 8000])
    frame_lengths = ours.encoder.output_lengths(lengths)
    num_frames = int(frame_lengths.max())
    labels = torch.randint(
        0, NUM_CLASSES, (3, num_frames), generator=torch.Generator().manual_seed(1)
    )
    mask = compute_span_mask(
        frame_lengths, num_frames, 0.8, 10, generator=torch.Generator().manual_seed(2)
    )
    reference.mask_generator.mask = mask
    reference.zero_grad()
    ours.zero_grad()

    logit_m, logit_u, feature_pen = reference(wav, labels, lengths)
    captured = {}
    forward_logits = ours.forward_logits

    def capture(*args, **kwargs):
        # one forward gives both the loss and the logits (forward asks for the unmasked
        # ones too: their accuracy is logged)
        captured["output"] = forward_logits(*args, **kwargs)
        return captured["output"]

    ours.forward_logits = capture
    try:
        loss, metrics = ours(
            SimpleNamespace(
                wav=wav, lengths=lengths, frame_label_lengths=None, frame_labels=labels
            ),
            mask=mask,
        )
    finally:
        del ours.forward_logits
    output = captured["output"]
    for ours_logits, targets, theirs in (
        (output.logits_masked[0], output.targets_masked[0], logit_m),
        (output.logits_unmasked[0], output.targets_unmasked[0], logit_u),
    ):
        assert ours_logits.shape == (theirs.shape[0], NUM_CLASSES)
        rows = torch.arange(len(targets))
        torch.testing.assert_close(ours_logits[rows, targets], theirs[:, 0], atol=1e-4, rtol=0)
        negatives = ours_logits.clone()
        negatives[rows, targets] = float("-inf")
        torch.testing.assert_close(negatives, theirs[:, 1:], atol=1e-4, rtol=0)

    expected = reference_hubert_loss(logit_m, logit_u, feature_pen)
    assert abs(float(loss.detach()) - float(expected.detach())) <= 1e-4
    assert float(metrics["mask_fraction"]) == pytest.approx(float(mask.float().mean()))

    loss.backward()
    expected.backward()
    # the conv gradient also checks the 0.1 feature-extractor gradient scale
    pairs = [
        (
            ours.encoder.feature_extractor.blocks[0].weight,
            reference.wav2vec2.feature_extractor.conv_layers[0].conv.weight,
        ),
        (ours.encoder.mask_embedding, reference.mask_generator.mask_embedding),
        (ours.label_embeddings, reference.logit_generator.label_embeddings),
        (ours.final_proj.weight, reference.logit_generator.final_proj.weight),
    ]
    for mine, theirs in pairs:
        scale = theirs.grad.abs().max()
        assert float((mine.grad - theirs.grad).abs().max() / scale) <= 1e-4


def test_padded_batch_matches_torchaudio_on_valid_frames(reference_and_ours):
    reference, ours = reference_and_ours
    wav, lengths = _batch([8000, 4500, 6345], seed=3)
    frame_lengths = ours.encoder.output_lengths(lengths)
    num_frames = int(frame_lengths.max())
    labels = torch.randint(
        0, NUM_CLASSES, (3, num_frames), generator=torch.Generator().manual_seed(4)
    )
    mask = compute_span_mask(
        frame_lengths, num_frames, 0.8, 10, generator=torch.Generator().manual_seed(5)
    )
    reference.mask_generator.mask = mask
    with torch.no_grad():
        logit_m, logit_u, _ = reference(wav, labels, lengths)
        output = ours.forward_logits(wav, lengths, labels, mask=mask, compute_unmasked=True)
        features, _ = reference.wav2vec2.feature_extractor(wav, lengths)
    rows = torch.arange(len(output.targets_masked[0]))
    torch.testing.assert_close(
        output.logits_masked[0][rows, output.targets_masked[0]], logit_m[:, 0], atol=1e-4, rtol=0
    )
    unmasked = output.logits_unmasked[0]
    assert unmasked.shape[0] == logit_u.shape[0] == int(frame_lengths.sum() - mask.sum())
    # our penalty averages valid frames only (torchaudio's includes the padded tail)
    valid = torch.arange(num_frames)[None] < frame_lengths[:, None]
    assert float(output.feature_penalty) == pytest.approx(
        float(features[valid].square().mean()), rel=1e-5
    )


def test_span_mask_never_covers_padding_and_has_fairseq_statistics():
    lengths = torch.tensor([250, 180, 97, 13, 0])
    fractions, reference_fractions = [], []
    for seed in range(40):
        mask = compute_span_mask(
            lengths, 250, 0.8, 10, min_masks=2, generator=torch.Generator().manual_seed(seed)
        )
        padding = torch.arange(250)[None] >= lengths[:, None]
        assert not mask[padding].any()
        counts = mask.sum(dim=1)
        assert len(set(counts[:4].tolist())) == 1 and counts[4] == 0  # require_same_masks
        fractions.append(float(mask[0].sum()) / 250)
    torch.manual_seed(0)
    for _ in range(40):
        padding_mask = torch.arange(250)[None] >= lengths[:4, None]
        reference = _compute_mask_indices((4, 250), padding_mask, 0.8, 10, min_masks=2)
        reference_fractions.append(float(reference[0].sum()) / 250)
    # the same span-count rule and min-count trimming give the same masked share
    mean, reference_mean = sum(fractions) / 40, sum(reference_fractions) / 40
    assert abs(mean - reference_mean) < 0.02, (mean, reference_mean)

    single = compute_span_mask(
        torch.tensor([400]), 400, 0.8, 10, generator=torch.Generator().manual_seed(0)
    )
    # every masked run is a union of whole 10-frame spans (starts lie before length - 10)
    runs, current = [], 0
    for value in single[0].tolist() + [False]:
        if value:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    assert runs and min(runs) >= 10


def test_align_labels_follows_fairseq_label_rate():
    frame_lengths = torch.tensor([49, 30])
    labels = torch.arange(2 * 98).view(2, 98)  # 100 Hz labels for 0.98 s
    aligned, lengths = align_labels(labels, torch.tensor([98, 55]), frame_lengths, 49, 100.0, 50.0)
    # fairseq forward_targets: index = floor(t * feat2tar_ratio) with ratio 2
    assert aligned[0, :, 0].tolist() == labels[0, ::2].tolist()
    assert lengths.tolist() == [49, 28]  # 55 labels cover frames t with 2t < 55
    aligned, lengths = align_labels(labels[:, :40], None, frame_lengths, 49, 50.0, 50.0)
    assert aligned.shape == (2, 40, 1) and lengths.tolist() == [
        40,
        30,
    ]  # features trimmed to labels


def _tiny_model(**config_overrides):
    torch.manual_seed(0)
    encoder = build_encoder(
        "hubert_tiny", dropout=0.0, attention_dropout=0.0, dropout_input=0.0, layer_drop=0.0
    )
    config = MaskedPredictionConfig(num_classes=[20], final_dim=16, **config_overrides)
    return HubertPretrainModel(encoder, config)


def test_batched_loss_equals_per_utterance_sums_and_ignores_padding():
    model = _tiny_model().eval()
    wav, lengths = _batch([8000, 4000, 6400], seed=6)
    frame_lengths = model.encoder.output_lengths(lengths)
    num_frames = int(frame_lengths.max())
    labels = torch.randint(0, 20, (3, num_frames), generator=torch.Generator().manual_seed(7))
    mask = compute_span_mask(
        frame_lengths, num_frames, 0.8, 10, generator=torch.Generator().manual_seed(8)
    )
    noisy = wav.clone()
    noisy[1, 4000:] = 5.0  # loud padding
    noisy_labels = labels.clone()
    noisy_labels[1, int(frame_lengths[1]) :] = 19
    with torch.no_grad():
        batched = model.forward_logits(noisy, lengths, noisy_labels, mask=mask)
        loss, _ = model(
            SimpleNamespace(
                wav=noisy, lengths=lengths, frame_label_lengths=None, frame_labels=noisy_labels
            ),
            mask=mask,
        )
        cross_entropy_sum, count, squares, square_count = 0.0, 0, 0.0, 0
        for row in range(3):
            frames = int(frame_lengths[row])
            single = model.forward_logits(
                wav[row : row + 1, : lengths[row]],
                lengths[row : row + 1],
                labels[row : row + 1, :frames],
                mask=mask[row : row + 1, :frames],
            )
            cross_entropy_sum += float(
                F.cross_entropy(single.logits_masked[0], single.targets_masked[0], reduction="sum")
            )
            count += len(single.targets_masked[0])
            square_count += frames
            squares += float(single.feature_penalty) * frames
    expected = cross_entropy_sum / count + 10.0 * squares / square_count
    assert len(batched.targets_masked[0]) == count
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_unispeech_sat_additions_train_and_keep_primary_targets():
    model = _tiny_model(
        mixing=MixingConfig(enabled=True, mixing_prob=1.0),
        contrastive=ContrastiveConfig(enabled=True, layer=1, proj_dim=16, num_negatives=10),
    ).train()
    wav, lengths = _batch([8000, 6000, 7000, 8000], seed=9)
    labels = torch.randint(0, 20, (4, 24), generator=torch.Generator().manual_seed(10))
    seen = {}
    forward_logits = model.forward_logits

    def spy(wav_in, lengths_in, labels_in, *args, **kwargs):
        seen["wav"], seen["labels"] = wav_in, labels_in
        return forward_logits(wav_in, lengths_in, labels_in, *args, **kwargs)

    model.forward_logits = spy
    batch = SimpleNamespace(
        wav=wav.clone(), lengths=lengths, frame_label_lengths=None, frame_labels=labels.clone()
    )
    loss, metrics = model(batch)
    assert not torch.equal(seen["wav"], wav)  # the waveforms were mixed ...
    assert seen["labels"] is batch.frame_labels and torch.equal(
        batch.frame_labels, labels
    )  # ... the targets were not
    assert torch.equal(batch.wav, wav)
    assert float(metrics["mixed_fraction"]) > 0.5
    assert {"contrastive_loss", "contrastive_accuracy", "loss_masked"} <= set(metrics)
    loss.backward()
    assert model.contrastive.projection.weight.grad.abs().sum() > 0
    # the contrastive loss reads layer 1, so layer 1 gets gradient from it and from the CE
    assert model.encoder.transformer.layers[0].attention.q_proj.weight.grad.abs().sum() > 0


def test_bad_labels_and_layers_give_clear_errors():
    model = _tiny_model()
    wav, lengths = _batch([8000, 8000])
    with pytest.raises(ValueError, match="labels of set 0"):
        model(
            SimpleNamespace(
                wav=wav,
                lengths=lengths,
                frame_label_lengths=None,
                frame_labels=torch.full((2, 24), 20),
            )
        )
    with pytest.raises(ValueError, match="frame labels"):
        model(
            SimpleNamespace(wav=wav, lengths=lengths, frame_label_lengths=None, frame_labels=None)
        )
    with pytest.raises(ValueError, match="contrastive.layer"):
        _tiny_model(contrastive=ContrastiveConfig(enabled=True, layer=6))
