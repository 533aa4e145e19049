"""Duration-bucket sampler: budget, DDP coverage, resume, shuffling, padding waste."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from speechssl import audio
from speechssl.data.sampler import DurationBucketSampler, padding_waste

DEMO_ROOT = (
    Path(__file__).parents[3] / "speechssl" / "demo_data" / "LibriSpeech" / "train-clean-100"
)


def _durations(count: int = 997, seed: int = 0) -> np.ndarray:
    # LibriSpeech-like: gamma-distributed, 1-35 s.
    generator = np.random.default_rng(seed)
    return np.clip(generator.gamma(4.0, 3.2, size=count), 1.0, 35.0).astype(np.float32)


def _make(durations, **kwargs) -> DurationBucketSampler:
    kwargs.setdefault("max_batch_seconds", 120.0)
    kwargs.setdefault("seed", 3)
    return DurationBucketSampler(durations, **kwargs)


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
def test_ranks_cover_every_utterance_once_with_equal_batch_counts(num_replicas):
    durations = _durations()
    for epoch in (0, 1):
        samplers = [
            _make(durations, num_replicas=num_replicas, rank=r) for r in range(num_replicas)
        ]
        per_rank = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert len({len(batches) for batches in per_rank}) == 1
        assert all(len(sampler) == len(per_rank[0]) for sampler in samplers)
        seen = [index for batches in per_rank for batch in batches for index in batch]
        assert sorted(seen) == list(range(len(durations)))


def test_batches_respect_the_padded_budget_and_the_crop():
    durations = _durations()
    sampler = _make(durations, max_batch_seconds=60.0, max_batch_size=16)
    for batch in sampler:
        assert len(batch) * durations[batch].max() <= 60.0 and len(batch) <= 16
    cropped = _make(durations, max_batch_seconds=60.0, max_duration=6.0)
    batches = list(cropped)
    assert all(len(batch) * np.minimum(durations[batch], 6.0).max() <= 60.0 for batch in batches)
    # Batches of cropped (6 s) utterances hold 10: the crop, not the full length, counts.
    assert max(len(b) for b in batches if np.minimum(durations[b], 6.0).min() == 6.0) == 10
    # An utterance longer than the budget gets a batch of its own instead of vanishing.
    alone = list(_make(np.array([1.0, 50.0, 2.0], np.float32), max_batch_seconds=10.0))
    assert [1] in alone and sorted(i for b in alone for i in b) == [0, 1, 2]


def test_drop_last_gives_equal_counts_without_repeats():
    durations = _durations(101)
    per_rank = [list(_make(durations, num_replicas=4, rank=r, drop_last=True)) for r in range(4)]
    assert len({len(batches) for batches in per_rank}) == 1
    seen = [index for batches in per_rank for batch in batches for index in batch]
    assert len(seen) == len(set(seen)) <= len(durations)


def test_fewer_utterances_than_ranks_repeats_to_fill_the_round():
    durations = np.array([2.0, 3.0], np.float32)
    per_rank = [list(_make(durations, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(batches) for batches in per_rank] == [1, 1, 1]
    assert {i for batches in per_rank for batch in batches for i in batch} == {0, 1}


def test_resume_continues_exactly_where_it_stopped():
    durations = _durations()
    for rank in (0, 1):
        reference = _make(durations, num_replicas=2, rank=rank)
        reference.set_epoch(2)
        expected = list(reference)
        reference.set_epoch(3)
        expected_next_epoch = list(reference)

        interrupted = _make(durations, num_replicas=2, rank=rank)
        interrupted.set_epoch(2)
        iterator = iter(interrupted)
        seen = [next(iterator) for _ in range(7)]
        state = interrupted.state_dict()

        resumed = _make(durations, num_replicas=2, rank=rank)
        resumed.load_state_dict(state)
        resumed.set_epoch(2)  # a trainer re-selecting the same epoch keeps the position
        assert seen + list(resumed) == expected
        resumed.set_epoch(3)
        assert list(resumed) == expected_next_epoch

    # With DataLoader prefetch the loop passes what it consumed, not what was yielded.
    sampler = _make(durations)
    iterator = iter(sampler)
    for _ in range(5):
        next(iterator)
    resumed = _make(durations)
    resumed.load_state_dict(sampler.state_dict(batches_consumed=3))
    assert list(resumed) == list(_make(durations))[3:]
    with pytest.raises(ValueError, match="num_replicas"):
        _make(durations, num_replicas=2, rank=0).load_state_dict(sampler.state_dict())


def test_epochs_shuffle_differently_and_seeds_reproduce():
    durations = _durations()
    sampler = _make(durations)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    assert sorted(map(tuple, epoch0)) != sorted(map(tuple, epoch1))  # new batch contents too
    assert list(_make(durations)) == epoch0
    assert list(_make(durations, seed=4)) != epoch0
    assert list(_make(durations, shuffle=False)) == list(_make(durations, shuffle=False, seed=9))


def test_bucketing_keeps_padding_waste_small():
    durations = _durations(5000)
    sampler = _make(durations, max_batch_seconds=200.0)
    waste = sampler.padding_waste()
    random_batches = np.array_split(np.random.default_rng(0).permutation(5000), len(sampler))
    assert waste < 0.1 < padding_waste(durations, random_batches)


def _demo_durations() -> np.ndarray:
    paths = sorted(DEMO_ROOT.rglob("*.opus"))  # the demo LibriSpeech is stored as Ogg Opus
    return np.array([audio.info(path).duration for path in paths], dtype=np.float32)


@pytest.mark.skipif(not DEMO_ROOT.is_dir(), reason="demo corpus not generated yet")
def test_padding_waste_on_the_demo_corpus_is_below_ten_percent():
    durations = _demo_durations()
    assert len(durations) > 0
    # the real demo utterances last 1-17 s: batches of 60 s and more hold several of them
    for num_buckets, max_batch_seconds in ((20, 60.0), (20, 120.0), (5, 60.0)):
        unbucketed = _make(durations, max_batch_seconds=max_batch_seconds, num_buckets=1)
        unbucketed = unbucketed.padding_waste()
        sampler = _make(durations, max_batch_seconds=max_batch_seconds, num_buckets=num_buckets)
        waste = sampler.padding_waste()
        print(
            f"{os.path.relpath(DEMO_ROOT)}: {len(durations)} utterances, {num_buckets} buckets, "
            f"{max_batch_seconds} s batches: waste {waste:.3f} (one bucket: {unbucketed:.3f})"
        )
        assert waste < 0.1 and waste < unbucketed
