import pytest
import torch

from speechssl.heads import AttentiveStatisticsPooling, MaskedMeanPooling, WeightedLayerSum


def test_layer_sum_starts_equal_and_weights_sum_to_one():
    layer_sum = WeightedLayerSum(num_layers=5)
    weights = layer_sum.weights()
    torch.testing.assert_close(weights, torch.full((5,), 0.2))
    hidden_states = [torch.randn(2, 7, 3) for _ in range(5)]
    # equal weights: the plain average of the layers
    torch.testing.assert_close(layer_sum(hidden_states), torch.stack(hidden_states).mean(0))
    with torch.no_grad():
        layer_sum.logits.copy_(torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0]))
    weights = layer_sum.weights()
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    expected = sum(
        w * h for w, h in zip(torch.softmax(layer_sum.logits.detach(), 0), hidden_states)
    )
    torch.testing.assert_close(layer_sum(hidden_states), expected)


def test_layer_sum_layer_norm_and_gradient_reaches_logits():
    layer_sum = WeightedLayerSum(num_layers=2, layer_norm=True)
    hidden_states = [torch.randn(2, 4, 6) * 100, torch.randn(2, 4, 6)]
    mixed = layer_sum(hidden_states)
    normalised = [torch.nn.functional.layer_norm(h, (6,)) for h in hidden_states]
    torch.testing.assert_close(mixed, (normalised[0] + normalised[1]) / 2)
    mixed.pow(2).sum().backward()
    assert layer_sum.logits.grad is not None and layer_sum.logits.grad.abs().sum() > 0


def test_layer_sum_rejects_wrong_layer_count():
    with pytest.raises(ValueError, match="expected 3 hidden states, got 2"):
        WeightedLayerSum(3)([torch.zeros(1, 2, 2)] * 2)


@pytest.mark.parametrize("pooling", ["mean", "attentive"])
@pytest.mark.parametrize("training", [True, False])
def test_pooling_ignores_padding_and_matches_per_utterance(pooling, training):
    torch.manual_seed(0)
    module = MaskedMeanPooling() if pooling == "mean" else AttentiveStatisticsPooling(4, 8)
    module.train(training)
    frames = torch.randn(3, 9, 4)
    lengths = torch.tensor([9, 5, 2])
    pooled = module(frames, lengths)
    changed = frames.clone()
    for row, length in enumerate(lengths.tolist()):
        changed[row, length:] = torch.randn(9 - length, 4) * 1e3
    changed[2, 5] = float("nan")  # even NaN in the padding must not leak
    torch.testing.assert_close(module(changed, lengths), pooled)
    for row, length in enumerate(lengths.tolist()):
        single = module(frames[row : row + 1, :length], torch.tensor([length]))
        torch.testing.assert_close(single, pooled[row : row + 1])


def test_mean_pooling_is_the_masked_mean():
    frames = torch.randn(2, 6, 3)
    pooled = MaskedMeanPooling()(frames, torch.tensor([6, 4]))
    torch.testing.assert_close(pooled[1], frames[1, :4].mean(0))


def test_attentive_pooling_with_flat_scores_gives_mean_and_std():
    pooling = AttentiveStatisticsPooling(3, 5)
    torch.nn.init.zeros_(pooling.scorer[2].weight)  # constant scores -> uniform attention
    frames = torch.randn(2, 8, 3)
    pooled = pooling(frames, torch.tensor([8, 5]))
    valid = frames[1, :5]
    torch.testing.assert_close(pooled[1, :3], valid.mean(0))
    torch.testing.assert_close(pooled[1, 3:], valid.std(0, unbiased=False), atol=1e-5, rtol=1e-4)


def test_pooling_rejects_bad_lengths():
    with pytest.raises(ValueError, match="frame lengths must lie in"):
        MaskedMeanPooling()(torch.zeros(2, 3, 4), torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="frames must be a"):
        MaskedMeanPooling()(torch.zeros(3, 4), torch.tensor([3, 3, 3]))
