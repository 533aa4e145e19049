"""Future-frame L1: padding never counts, batched equals per-utterance."""

import pytest
import torch

from speechssl.objectives.predictive_coding import future_frame_l1, span_mask


def _per_utterance_mean(predictions, targets, lengths, shift):
    total, count = 0.0, 0
    for b, length in enumerate(lengths.tolist()):
        if length <= shift:
            continue
        diff = (predictions[b, : length - shift] - targets[b, shift:length]).abs().mean(-1)
        total += float(diff.sum())
        count += length - shift
    return total / count, count


@pytest.mark.parametrize("shift", [1, 3, 5])
def test_loss_equals_per_utterance_reference(shift):
    torch.manual_seed(0)
    lengths = torch.tensor([20, 13, 4, 9])
    predictions, targets = torch.randn(4, 20, 8), torch.randn(4, 20, 8)
    loss, count = future_frame_l1(predictions, targets, lengths, shift)
    expected, expected_count = _per_utterance_mean(predictions, targets, lengths, shift)
    assert int(count) == expected_count
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_padding_values_do_not_change_the_loss():
    torch.manual_seed(1)
    lengths = torch.tensor([12, 7])
    predictions, targets = torch.randn(2, 12, 5), torch.randn(2, 12, 5)
    loss, _ = future_frame_l1(predictions, targets, lengths, 3)
    noisy_targets, noisy_predictions = targets.clone(), predictions.clone()
    noisy_targets[1, 7:] = 1e6
    noisy_predictions[1, 4:] = -1e6  # predictions at t >= length - shift have no target
    loss_noisy, _ = future_frame_l1(noisy_predictions, noisy_targets, lengths, 3)
    assert float(loss_noisy) == pytest.approx(float(loss), rel=1e-6)


def test_too_short_batches_give_zero_loss_with_gradient_path():
    predictions = torch.randn(2, 2, 3, requires_grad=True)
    loss, count = future_frame_l1(predictions, torch.randn(2, 2, 3), torch.tensor([2, 1]), 3)
    assert float(loss.detach()) == 0.0 and int(count) == 0
    loss.backward()
    assert predictions.grad is not None


def test_invalid_shift_is_refused():
    with pytest.raises(ValueError, match="shift"):
        future_frame_l1(torch.zeros(1, 4, 2), torch.zeros(1, 4, 2), torch.tensor([4]), 0)


def test_span_mask_stays_inside_lengths_and_has_span_structure():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([50, 20])
    mask = span_mask(lengths, 50, mask_prob=0.05, mask_length=5, generator=generator)
    assert mask.shape == (2, 50)
    assert not mask[1, 20:].any()
    assert mask.any()
    # every masked run (not cut by the utterance end) is at least mask_length long
    row = mask[0].tolist() + [False]
    run = 0
    for value in row:
        if value:
            run += 1
        elif run:
            assert run >= 5
            run = 0
