"""UniSpeech-SAT utterance-wise contrastive loss: reference definition, behaviour, padding."""

import pytest
import torch
import torch.nn.functional as F

from speechssl.objectives.utterance_contrastive import UtteranceContrastiveLoss, sample_candidates


def _identity_loss(dim: int, num_negatives: int = 20) -> UtteranceContrastiveLoss:
    """A loss whose projection is the identity, so the geometry of the inputs is what counts."""
    loss_fn = UtteranceContrastiveLoss(input_dim=dim, proj_dim=dim, num_negatives=num_negatives)
    with torch.no_grad():
        loss_fn.projection.weight.copy_(torch.eye(dim))
        loss_fn.projection.bias.zero_()
    return loss_fn


def test_loss_equals_the_per_anchor_reference_definition():
    """Authors' compute_pred_spk: logits = cos(proj x_n, [y_n; y_samples]) / 0.1, labels 1 for
    the own target and for same-utterance samples, BCE averaged over everything."""
    torch.manual_seed(0)
    loss_fn = UtteranceContrastiveLoss(input_dim=12, proj_dim=6, num_negatives=7)
    hidden = torch.randn(3, 9, 12)
    frame_mask = torch.rand(3, 9) < 0.6
    loss, metrics = loss_fn(hidden, frame_mask, generator=torch.Generator().manual_seed(1))

    frames = hidden[frame_mask]
    utterance = torch.arange(3)[:, None].expand(3, 9)[frame_mask]
    indices = sample_candidates(len(frames), 7, generator=torch.Generator().manual_seed(1))
    projected = loss_fn.projection(frames)
    terms = []
    for n in range(len(frames)):
        assert n not in indices[n].tolist()  # never the anchor itself
        candidates = torch.cat([projected[n : n + 1], projected[indices[n]]])
        logits = F.cosine_similarity(projected[n : n + 1], candidates, dim=-1) / 0.1
        labels = torch.cat([torch.ones(1), (utterance[indices[n]] == utterance[n]).float()])
        terms.append(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
    expected = torch.cat(terms).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert float(metrics["contrastive_bce"]) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_loss_is_low_when_utterances_are_distinct_and_high_when_positives_are_wrong():
    torch.manual_seed(2)
    direction = F.normalize(torch.randn(8), dim=0)
    # two utterances whose frames point in opposite directions (plus a little noise)
    hidden = torch.stack([direction.expand(30, 8), -direction.expand(30, 8)]) + 0.05 * torch.randn(
        2, 30, 8
    )
    frame_mask = torch.ones(2, 30, dtype=torch.bool)
    loss_fn = _identity_loss(8)
    distinct, metrics = loss_fn(hidden, frame_mask, generator=torch.Generator().manual_seed(3))
    assert float(distinct.detach()) < 0.01
    assert float(metrics["contrastive_accuracy"]) == 1.0
    # same frames, but each utterance now holds half of each direction: same-utterance
    # "positives" point away half of the time
    shuffled = hidden.reshape(60, 8)[
        torch.randperm(60, generator=torch.Generator().manual_seed(4))
    ].reshape(2, 30, 8)
    wrong, _ = loss_fn(shuffled, frame_mask, generator=torch.Generator().manual_seed(3))
    assert float(wrong.detach()) > 1.0


def test_padding_and_unmasked_frames_never_enter():
    torch.manual_seed(5)
    loss_fn = UtteranceContrastiveLoss(input_dim=10, proj_dim=4, num_negatives=9)
    hidden = torch.randn(3, 15, 10)
    frame_mask = torch.rand(3, 15) < 0.5
    frame_mask[2, 10:] = False  # padding of a shorter utterance
    loss, _ = loss_fn(hidden, frame_mask, generator=torch.Generator().manual_seed(6))
    garbage = hidden.clone()
    garbage[~frame_mask] = 1e4
    loss_garbage, _ = loss_fn(garbage, frame_mask, generator=torch.Generator().manual_seed(6))
    assert float(loss_garbage.detach()) == float(loss.detach())


def test_quantized_targets_add_the_diversity_penalty_and_train_the_codebook():
    torch.manual_seed(7)
    loss_fn = UtteranceContrastiveLoss(
        input_dim=16, proj_dim=8, num_negatives=5, use_quantizer=True, num_vars=10, groups=2
    ).train()
    hidden = torch.randn(2, 12, 16, requires_grad=True)
    loss, metrics = loss_fn(hidden, torch.ones(2, 12, dtype=torch.bool))
    assert 0.0 <= float(metrics["diversity_loss"]) < 1.0
    assert 1.0 <= float(metrics["prob_perplexity"]) <= 20.0
    expected = metrics["contrastive_bce"] + 0.1 * metrics["diversity_loss"]
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert loss_fn.quantizer.codebook.grad.abs().sum() > 0
    assert loss_fn.quantizer.weight_proj.weight.grad.abs().sum() > 0
    assert int(loss_fn.quantizer.step) == 1  # temperature annealing advances in training


def test_fewer_than_two_frames_gives_a_connected_zero():
    loss_fn = UtteranceContrastiveLoss(input_dim=4, proj_dim=4)
    hidden = torch.randn(2, 3, 4, requires_grad=True)
    frame_mask = torch.zeros(2, 3, dtype=torch.bool)
    frame_mask[0, 1] = True
    loss, _ = loss_fn(hidden, frame_mask)
    loss.backward()
    assert float(loss.detach()) == 0.0 and hidden.grad is not None
    with pytest.raises(ValueError, match="frame_mask"):
        loss_fn(hidden, frame_mask[:, :2])
