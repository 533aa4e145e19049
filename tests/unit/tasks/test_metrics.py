import numpy as np
import pytest
import torch
from sklearn import metrics as sk
from speechbrain.utils.metric_stats import EER, minDCF

from speechssl.tasks.metrics import (
    confusion_matrix,
    eer_and_mindcf,
    mean_std,
    top1_accuracy,
    unweighted_accuracy,
    weighted_accuracy,
)


def test_hand_computed_fixture():
    # class 0: 3 of 4 right, class 1: 1 of 2, class 2: 2 of 2
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 2, 2, 2]
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(6 / 8)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx((3 / 4 + 1 / 2 + 2 / 2) / 3)
    assert confusion_matrix(y_true, y_pred).tolist() == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]


def test_absent_class_is_left_out_of_ua_but_kept_in_the_matrix():
    # class 2 never occurs in y_true; predicting it is still an error for class 1
    y_true, y_pred = [0, 0, 1, 1], [0, 0, 1, 2]
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx((1.0 + 0.5) / 2)
    assert confusion_matrix(y_true, y_pred, num_classes=4).tolist() == [
        [2, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


@pytest.mark.parametrize("seed", range(5))
def test_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, size=200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 4, size=200))
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert unweighted_accuracy(torch.as_tensor(y_true), torch.as_tensor(y_pred)) == pytest.approx(
        sk.balanced_accuracy_score(y_true, y_pred)
    )
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, 4), sk.confusion_matrix(y_true, y_pred, labels=range(4))
    )
    scores = rng.normal(size=(200, 4))
    scores[np.arange(200), y_pred] += 10  # argmax = y_pred
    assert top1_accuracy(scores, y_true) == pytest.approx(sk.accuracy_score(y_true, y_pred))


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="differ in length"):
        weighted_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        unweighted_accuracy([], [])
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="integer"):
        weighted_accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="target and one non-target"):
        eer_and_mindcf([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="0 \\(non-target\\) or 1"):
        eer_and_mindcf([0.1, 0.2], [1, 2])


def test_eer_mindcf_hand_computed():
    # targets 0.9 0.8 0.3, non-targets 0.4 0.1. Threshold 0.35: miss 1/3, false alarm 1/2 ->
    # EER (1/3 + 1/2) / 2; threshold 0.4: miss 1/3, false alarm 0 -> C_det = 0.01 / 3
    result = eer_and_mindcf([0.9, 0.8, 0.3, 0.4, 0.1], [1, 1, 1, 0, 0])
    assert result["eer"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert result["min_dcf_unnormalized"] == pytest.approx(0.01 / 3)
    assert result["min_dcf"] == pytest.approx(1 / 3)
    perfect = eer_and_mindcf([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    assert perfect["eer"] == 0 and perfect["min_dcf"] == 0


@pytest.mark.parametrize("seed, ties", [(0, False), (1, False), (2, True), (3, True)])
def test_eer_mindcf_equal_speechbrain_and_match_sklearn_roc(seed, ties):
    generator = torch.Generator().manual_seed(seed)
    positive = torch.randn(60, generator=generator) + 1.5
    negative = torch.randn(240, generator=generator)
    if ties:  # rounded scores share thresholds
        positive, negative = positive.round(decimals=1), negative.round(decimals=1)
    scores = torch.cat([positive, negative])
    labels = torch.cat([torch.ones(60), torch.zeros(240)]).long()
    for p_target, c_miss, c_fa in [(0.01, 1.0, 1.0), (0.05, 1.0, 1.0), (0.1, 2.0, 1.0)]:
        result = eer_and_mindcf(scores, labels, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
        reference_eer, _ = EER(positive, negative)
        reference_dcf, _ = minDCF(positive, negative, c_miss=c_miss, c_fa=c_fa, p_target=p_target)
        assert result["eer"] == pytest.approx(reference_eer, abs=1e-6)
        assert result["min_dcf_unnormalized"] == pytest.approx(reference_dcf, abs=1e-6)
        assert result["min_dcf"] == pytest.approx(
            reference_dcf / min(c_miss * p_target, c_fa * (1 - p_target)), abs=1e-5
        )
    # sklearn's ROC: the EER lies where the miss rate (1 - tpr) crosses the false-alarm rate
    fpr, tpr, _ = sk.roc_curve(labels.numpy(), scores.numpy())
    fnr = 1 - tpr
    crossing = np.argmin(np.abs(fnr - fpr))
    assert result["eer"] == pytest.approx((fnr[crossing] + fpr[crossing]) / 2, abs=1 / 60)


def test_eer_scales_to_voxceleb_sized_trial_lists():
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(37720, generator=generator) < 0.5).long()
    scores = torch.randn(37720, generator=generator) + 2.0 * labels
    result = eer_and_mindcf(scores, labels)
    # two unit Gaussians 2 apart cross at 1: EER = P(N(0,1) > 1) = 0.1587
    assert result["eer"] == pytest.approx(0.1587, abs=0.01)


def test_mean_std_is_population_std():
    assert mean_std([0.5, 0.75]) == pytest.approx((0.625, 0.125))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_std([])
