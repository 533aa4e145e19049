"""Confidence intervals: coverage of a known difference, shrinking with n, exact zeros."""

import itertools

import numpy as np
import pytest

from speechssl.stats import (
    accuracy,
    bootstrap_metric,
    excludes_zero,
    format_estimate,
    mean_ci,
    paired_bootstrap_delta,
    unpaired_bootstrap_difference,
)
from speechssl.tasks.metrics import unweighted_accuracy


def _simulated_arms(generator, num_items, accuracy_a, accuracy_b, num_classes=4):
    """Predictions of two classifiers that are right with the given probabilities."""
    y_true = generator.integers(0, num_classes, num_items)

    def arm(rate):
        wrong = (y_true + generator.integers(1, num_classes, num_items)) % num_classes
        return np.where(generator.random(num_items) < rate, y_true, wrong)

    return y_true, arm(accuracy_a), arm(accuracy_b)


def test_paired_delta_covers_a_known_difference_about_95_percent_of_the_time():
    generator = np.random.default_rng(0)
    true_delta, covered, trials = 0.1, 0, 200
    for trial in range(trials):
        y_true, a, b = _simulated_arms(generator, 300, 0.7, 0.6)
        delta = paired_bootstrap_delta(accuracy, y_true, [a], [b], num_resamples=400, seed=trial)
        covered += delta.low <= true_delta <= delta.high
    assert 0.90 <= covered / trials <= 0.99


def test_cell_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    generator = np.random.default_rng(1)
    covered, trials = 0, 200
    for trial in range(trials):
        y_true, a, _ = _simulated_arms(generator, 300, 0.7, 0.5)
        cell = bootstrap_metric(accuracy, y_true, [a], num_resamples=400, seed=trial)
        covered += cell.low <= 0.7 <= cell.high
    assert 0.90 <= covered / trials <= 0.99


def test_intervals_shrink_as_the_test_set_grows():
    generator = np.random.default_rng(2)
    widths = []
    for num_items in (100, 400, 1600):
        y_true, a, b = _simulated_arms(generator, num_items, 0.7, 0.6)
        delta = paired_bootstrap_delta(accuracy, y_true, [a], [b], num_resamples=500)
        cell = bootstrap_metric(accuracy, y_true, [a], num_resamples=500)
        widths.append((delta.high - delta.low, cell.high - cell.low))
    for (delta_small, cell_small), (delta_large, cell_large) in itertools.pairwise(widths):
        # four times the items: about half the width
        assert delta_large < 0.7 * delta_small
        assert cell_large < 0.7 * cell_small


def test_identical_predictions_give_exactly_zero_with_a_zero_width_interval():
    generator = np.random.default_rng(3)
    y_true, a, _ = _simulated_arms(generator, 200, 0.6, 0.6)
    seeds = [a, np.roll(a, 1), np.roll(a, 2)]
    delta = paired_bootstrap_delta(unweighted_accuracy, y_true, seeds, list(seeds))
    # the same seeds resampled differently per arm still differ; one seed each cannot
    single = paired_bootstrap_delta(unweighted_accuracy, y_true, [a], [a.copy()])
    assert (single.delta, single.low, single.high) == (0.0, 0.0, 0.0)
    assert delta.delta == 0.0 and not excludes_zero(delta)


def test_seed_variation_widens_the_cell():
    generator = np.random.default_rng(4)
    y_true, a, b = _simulated_arms(generator, 400, 0.8, 0.5)
    steady = bootstrap_metric(accuracy, y_true, [a, a, a])
    varying = bootstrap_metric(accuracy, y_true, [a, b, a])
    assert steady.num_seeds == varying.num_seeds == 3
    assert varying.high - varying.low > steady.high - steady.low


def test_a_clear_gain_excludes_zero_and_formats_with_its_sign():
    generator = np.random.default_rng(5)
    y_true, a, b = _simulated_arms(generator, 500, 0.9, 0.5)
    delta = paired_bootstrap_delta(accuracy, y_true, [a], [b])
    assert excludes_zero(delta) and delta.low > 0.3
    assert format_estimate(delta).startswith("+")


def test_mean_ci_is_students_t_and_one_value_has_zero_width():
    estimate = mean_ci([0.5, 0.6, 0.7])
    # t(0.975, 2) = 4.303, s = 0.1, n = 3
    assert estimate.mean == pytest.approx(0.6)
    assert estimate.high - estimate.mean == pytest.approx(4.3027 * 0.1 / np.sqrt(3), rel=1e-3)
    assert mean_ci([0.4]) == (0.4, 0.4, 0.4, 1)


def test_mismatched_lengths_are_refused_in_one_line():
    with pytest.raises(ValueError, match="cover 3 items but there are 4"):
        bootstrap_metric(accuracy, np.zeros(4), [np.zeros(3)])


def test_unpaired_difference_covers_a_known_shift_and_matches_the_normal_interval():
    generator = np.random.default_rng(7)
    a, b = generator.normal(1.0, 1.0, 400), generator.normal(0.0, 2.0, 300)
    difference = unpaired_bootstrap_difference(a, b, num_resamples=2000)
    assert difference.delta == pytest.approx(a.mean() - b.mean())
    # the bootstrap interval of independent means is close to the normal one
    half = 1.96 * np.sqrt(a.var() / a.size + b.var() / b.size)
    assert difference.high - difference.low == pytest.approx(2 * half, rel=0.1)
    assert difference.low < 1.0 < difference.high and excludes_zero(difference)
    same = unpaired_bootstrap_difference(a, a)
    assert same.delta == 0.0 and same.low < 0 < same.high and not excludes_zero(same)
    with pytest.raises(ValueError, match="needs items in both samples"):
        unpaired_bootstrap_difference([], b)
