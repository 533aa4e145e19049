import math

import pytest
import torch
from speechbrain.dataio.dataio import length_to_mask
from torchaudio.compliance import kaldi

from speechssl.encoders.fbank_upstream import utterance_normalize
from speechssl.heads import ECAPAHead, FbankUpstream, UtteranceClassifier
from speechssl.heads.speaker import relative_lengths

TINY_ECAPA = {
    "channels": (16, 16, 16, 16, 48),
    "attention_channels": 8,
    "se_channels": 8,
    "res2net_scale": 4,
    "embedding_dim": 12,
}


@pytest.mark.parametrize("pooling", ["mean", "attentive"])
def test_classifier_ignores_padding_across_layers(pooling):
    torch.manual_seed(0)
    head = UtteranceClassifier(6, num_classes=3, projector_dim=8, pooling=pooling, num_layers=3)
    hidden_states = [torch.randn(2, 10, 6) for _ in range(3)]
    lengths = torch.tensor([10, 4])
    logits = head(hidden_states, lengths)
    assert logits.shape == (2, 3)
    changed = [h.clone() for h in hidden_states]
    for h in changed:
        h[1, 4:] = 50.0
    torch.testing.assert_close(head(changed, lengths), logits)
    single = head([h[1:, :4] for h in hidden_states], torch.tensor([4]))
    torch.testing.assert_close(single, logits[1:])


def test_classifier_without_layer_sum_takes_one_tensor_and_rejects_many():
    head = UtteranceClassifier(4, num_classes=2, projector_dim=8)
    frames = torch.randn(2, 5, 4)
    torch.testing.assert_close(
        head(frames, torch.tensor([5, 3])), head([frames], torch.tensor([5, 3]))
    )
    assert head.layer_weights() is None
    with pytest.raises(ValueError, match="no layer sum"):
        head([frames, frames], torch.tensor([5, 3]))
    with pytest.raises(ValueError, match="pooling must be one of"):
        UtteranceClassifier(4, 2, pooling="max")


def test_relative_lengths_rebuild_exact_speechbrain_masks():
    # SpeechBrain rebuilds masks as arange(F) < relative * F: every n must give exactly n frames
    for max_frames in [*range(1, 100), 257, 499, 1000, 1499]:
        lengths = torch.arange(1, max_frames + 1)
        relative = relative_lengths(lengths, max_frames)
        mask = length_to_mask(relative * max_frames, max_len=max_frames)
        assert torch.equal(mask.sum(1).long(), lengths), max_frames


def test_ecapa_embedding_ignores_padding_and_handles_short_inputs():
    torch.manual_seed(0)
    head = ECAPAHead(6, num_speakers=4, num_layers=2, **TINY_ECAPA).eval()
    hidden_states = [torch.randn(3, 20, 6) for _ in range(2)]
    lengths = torch.tensor([20, 11, 6])
    embeddings = head.embed(hidden_states, lengths)
    assert embeddings.shape == (3, 12)
    changed = [h.clone() for h in hidden_states]
    for h in changed:
        h[1, 11:] = 7.0
        h[2, 6:] = -3.0
    torch.testing.assert_close(head.embed(changed, lengths), embeddings)
    # 2 frames is below ECAPA's widest reflect padding: padded up, still one embedding each
    short = head.embed([h[:, :2] for h in hidden_states], torch.tensor([2, 2, 1]))
    assert short.shape == (3, 12) and torch.isfinite(short).all()


def test_ecapa_loss_is_additive_angular_margin_cross_entropy():
    torch.manual_seed(0)
    head = ECAPAHead(6, num_speakers=5, margin=0.2, scale=30.0, **TINY_ECAPA)
    cosine = torch.rand(4, 5) * 0.8  # angles where cos(theta + m) needs no fallback branch
    labels = torch.tensor([0, 3, 4, 1])
    target = torch.nn.functional.one_hot(labels, 5).bool()
    with_margin = torch.cos(torch.acos(cosine) + 0.2)
    expected = torch.nn.functional.cross_entropy(
        30.0 * torch.where(target, with_margin, cosine), labels
    )
    torch.testing.assert_close(head.loss(cosine, labels), expected, rtol=1e-4, atol=1e-5)
    scores = head(torch.randn(4, 9, 6), torch.tensor([9, 9, 5, 3]))
    assert scores.shape == (4, 5) and scores.abs().max() <= 1.0 + 1e-5


def test_fbank_upstream_is_normalised_kaldi_fbank():
    torch.manual_seed(0)
    upstream = FbankUpstream(n_mels=40)
    wav = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    out = upstream(wav, lengths)
    assert upstream.num_layers == 0 and upstream.output_dim == 40
    assert len(out.hidden_states) == 1 and out.hidden_states[0] is out.last_hidden_state
    reference = kaldi.fbank(wav[1:, :5000], num_mel_bins=40, dither=0.0)  # (F, 40)
    reference = (reference - reference.mean()) / (reference.var(unbiased=False) + 1e-5).sqrt()
    frames = int(out.lengths[1])
    assert frames == reference.shape[0] == 1 + (5000 - 400) // 160
    torch.testing.assert_close(out.last_hidden_state[1, :frames], reference, atol=2e-3, rtol=1e-3)
    assert out.last_hidden_state[1, frames:].abs().max() == 0
    assert upstream.spec() == {
        "family": "fbank",
        "config": {"family": "fbank", "n_mels": 40, "sample_rate": 16000, "normalize": True},
    }
    rebuilt = FbankUpstream.from_config(upstream.spec()["config"])
    torch.testing.assert_close(rebuilt(wav, lengths).last_hidden_state, out.last_hidden_state)


def test_utterance_normalize_uses_valid_frames_only():
    feats = torch.randn(2, 7, 3)
    normalised = utterance_normalize(feats, torch.tensor([7, 3]))
    valid = normalised[1, :3]
    assert abs(valid.mean().item()) < 1e-5
    assert math.isclose(valid.var(unbiased=False).item(), 1.0, rel_tol=1e-3)
    # a gain change (a constant added to the log-mel values) is removed
    torch.testing.assert_close(utterance_normalize(feats + 4.0, torch.tensor([7, 3])), normalised)
    assert normalised[1, 3:].abs().max() == 0
