"""Learning signals: accuracies against chance, the copy-last baseline, label entropy."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from speechssl.encoders import build_encoder
from speechssl.objectives import HubertPretrainModel, MaskedPredictionConfig, build_objective
from speechssl.objectives.predictive_coding import copy_last_frame_l1, future_frame_l1
from speechssl.objectives.signals import (
    count_statistics,
    label_statistics,
    learning_warnings,
    majority_accuracy,
    top1_accuracy,
)
from speechssl.objectives.utterance_contrastive import UtteranceContrastiveLoss, ranking_accuracy
from speechssl.targets import label_usage


def test_top1_accuracy_is_one_for_perfect_logits_and_chance_for_random_ones():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 10, (4000,), generator=generator)
    perfect = torch.nn.functional.one_hot(targets, 10).float() * 5.0
    assert float(top1_accuracy(perfect, targets)) == 1.0
    random = float(top1_accuracy(torch.randn(4000, 10, generator=generator), targets))
    assert 0.0 <= random <= 1.0 and abs(random - 0.1) < 0.025
    assert float(top1_accuracy(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long))) == 0.0


def test_majority_accuracy_is_the_most_frequent_label_share():
    assert float(majority_accuracy(torch.tensor([2, 2, 2, 0, 1]), 3)) == pytest.approx(0.6)


def test_entropy_of_a_uniform_label_file_is_log_k():
    num_clusters = 7
    labels = [np.arange(num_clusters).repeat(3), np.arange(num_clusters)]
    usage = label_usage(labels, num_clusters)
    assert usage["entropy"] == pytest.approx(math.log(num_clusters))
    assert usage["perplexity"] == pytest.approx(num_clusters)
    assert usage["used_fraction"] == 1.0 and usage["frames"] == 4 * num_clusters
    # one cluster only: entropy 0, perplexity 1, 1 of 7 used
    single = label_usage([np.zeros(10, dtype=np.int64)], num_clusters)
    assert single["entropy"] == 0.0 and single["perplexity"] == 1.0
    assert single["used_fraction"] == pytest.approx(1 / 7)
    statistics = label_statistics(torch.tensor([[0, 1], [2, 3]]), 4)
    assert float(statistics["entropy"]) == pytest.approx(math.log(4))
    assert float(count_statistics(torch.zeros(3))["used_fraction"]) == 0.0


def test_copy_last_baseline_equals_a_hand_computation_on_exactly_the_predicted_frames():
    feats = torch.tensor(
        [
            [[0.0, 1.0], [2.0, 1.0], [4.0, 0.0], [4.0, 4.0]],
            [[1.0, 1.0], [1.0, 3.0], [9.0, 9.0], [9.0, 9.0]],  # last two frames are padding
        ]
    )
    lengths = torch.tensor([4, 2])
    loss, count = copy_last_frame_l1(feats, lengths, shift=1)
    # utterance 0: |2-0|,|1-1| -> 1; |4-2|,|0-1| -> 1.5; |4-4|,|4-0| -> 2; utterance 1: |1-1|,|3-1| -> 1
    assert int(count) == 4 and float(loss) == pytest.approx((1 + 1.5 + 2 + 1) / 4)
    # the model's loss counts the same frames, and padding changes neither
    _, model_count = future_frame_l1(torch.randn(2, 4, 2), feats, lengths, 1)
    assert int(model_count) == int(count)
    padded = feats.clone()
    padded[1, 2:] = -1e6
    assert float(copy_last_frame_l1(padded, lengths, 1)[0]) == float(loss)
    # shift 2: utterance 0 only (|4-0|,|0-1| -> 2.5; |4-2|,|4-1| -> 2.5)
    loss, count = copy_last_frame_l1(feats, lengths, shift=2)
    assert int(count) == 2 and float(loss) == pytest.approx(2.5)


def _sweeps(batch_size: int, generator: torch.Generator, seconds: float = 1.0) -> torch.Tensor:
    """Exponential sine sweeps 200 Hz -> 6 kHz every 0.5 s from random phases: each frame's
    spectral peak moves up by a fixed step, so frame t + 3 follows from frame t (and copying
    frame t misses it by three steps)."""
    sample_rate, period = 16000, 0.5
    time = torch.arange(int(seconds * sample_rate)) / sample_rate
    offset = torch.rand(batch_size, 1, generator=generator) * period
    position = ((time[None] + offset) % period) / period  # (B, T) in [0, 1)
    frequency = 200.0 * 30.0**position
    return 0.5 * torch.sin(2 * math.pi * torch.cumsum(frequency, dim=1) / sample_rate)


def test_a_model_trained_on_a_predictable_signal_beats_the_copy_last_baseline():
    torch.manual_seed(0)
    model = build_objective({"name": "predictive_coding", "shifts": [3]}, build_encoder("tpc_tiny"))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(1)

    def batch():
        wav = _sweeps(4, generator)
        return SimpleNamespace(wav=wav, lengths=torch.full((4,), wav.shape[1]))

    def evaluate(batch):
        model.eval()
        with torch.no_grad():
            _, metrics = model(batch)
        model.train()
        return metrics

    held_out = batch()
    before = evaluate(held_out)
    # untrained, the model does worse than copying the last frame: no learning yet
    assert float(before["l1_shift3_ratio"]) > 1.0
    assert learning_warnings({k: float(v) for k, v in before.items()})
    for _ in range(40):
        loss, _ = model(batch())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = evaluate(held_out)
    assert float(after["l1_shift3_baseline"]) == float(before["l1_shift3_baseline"])
    assert float(after["l1_shift3"]) < 0.8 * float(after["l1_shift3_baseline"])
    assert float(after["l1_shift3_ratio"]) == pytest.approx(
        float(after["l1_shift3"]) / float(after["l1_shift3_baseline"])
    )
    assert learning_warnings({k: float(v) for k, v in after.items()}) == []


def test_learning_warnings_know_which_direction_is_better():
    assert learning_warnings({"accuracy_masked": 0.3, "accuracy_masked_baseline": 0.2}) == []
    (line,) = learning_warnings({"accuracy_masked": 0.2, "accuracy_masked_baseline": 0.2})
    assert line.startswith("accuracy_masked = 0.2 does not beat its baseline 0.2")
    assert learning_warnings({"l1_shift1": 0.5, "l1_shift1_baseline": 0.6}) == []
    assert len(learning_warnings({"l1_shift1": 0.7, "l1_shift1_baseline": 0.6})) == 1
    assert learning_warnings({"loss": 1.0, "l1_shift1_baseline": 0.6}) == []


def test_ranking_accuracy_is_one_when_positives_win_and_chance_when_scores_are_random():
    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(3000, 20, generator=generator) < 0.25
    perfect = positive.float() + 0.1 * torch.rand(3000, 20, generator=generator)
    accuracy, chance = ranking_accuracy(perfect, positive)
    assert float(accuracy) == 1.0
    # chance by its definition: each (anchor, positive) pair, 1 / (1 + the anchor's negatives)
    negatives = (~positive).sum(dim=1, keepdim=True).expand_as(positive)[positive]
    assert float(chance) == pytest.approx(float((1.0 / (1.0 + negatives.float())).mean()))
    random, _ = ranking_accuracy(torch.randn(3000, 20, generator=generator), positive)
    assert 0.0 <= float(random) <= 1.0 and abs(float(random) - float(chance)) < 0.02
    no_positive = ranking_accuracy(torch.randn(4, 5), torch.zeros(4, 5, dtype=torch.bool))
    assert [float(value) for value in no_positive] == [0.0, 0.0]


def test_contrastive_accuracy_is_logged_with_its_chance_level():
    torch.manual_seed(0)
    loss_fn = UtteranceContrastiveLoss(input_dim=16, proj_dim=8, num_negatives=30)
    hidden, frame_mask = torch.randn(4, 40, 16), torch.ones(4, 40, dtype=torch.bool)
    _, metrics = loss_fn(hidden, frame_mask, generator=torch.Generator().manual_seed(1))
    # 4 utterances: ~1/4 of the 30 draws are positives, so chance is about 1 / 23
    assert 1 / 31 < float(metrics["contrastive_accuracy_baseline"]) < 1 / 15
    # random frames carry no utterance identity: the positives win at about chance
    assert float(metrics["contrastive_accuracy"]) < 0.15


def test_hubert_logs_both_accuracies_and_the_label_entropy_of_its_valid_frames():
    torch.manual_seed(0)
    model = HubertPretrainModel(
        build_encoder("hubert_tiny"), MaskedPredictionConfig(num_classes=[8])
    )
    wav, lengths = torch.randn(2, 16000), torch.tensor([16000, 9600])
    labels = torch.randint(0, 8, (2, 49))
    labels[1, 29:] = 7  # beyond the second utterance's 29 frames: never counted
    batch = SimpleNamespace(wav=wav, lengths=lengths, frame_labels=labels, frame_label_lengths=None)
    loss, metrics = model(batch)
    for name in ("accuracy_masked", "accuracy_masked_baseline", "accuracy_unmasked"):
        assert 0.0 <= float(metrics[name]) <= 1.0
    frame_lengths = model.encoder.output_lengths(lengths).tolist()
    valid = torch.cat([labels[0, : frame_lengths[0]], labels[1, : frame_lengths[1]]])
    counts = torch.bincount(valid, minlength=8).double()
    probabilities = counts[counts > 0] / counts.sum()
    entropy = float(-(probabilities * probabilities.log()).sum())
    assert float(metrics["label_entropy"]) == pytest.approx(entropy, rel=1e-5)
    assert float(metrics["label_perplexity"]) == pytest.approx(math.exp(entropy), rel=1e-5)
    # at pred_nomask_weight 0 the unmasked frames feed a metric only: no gradient through them
    output = model.forward_logits(wav, lengths, labels, compute_unmasked=True)
    assert output.logits_masked[0].requires_grad and not output.logits_unmasked[0].requires_grad
    loss.backward()
