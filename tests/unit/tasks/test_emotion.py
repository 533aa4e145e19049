import json

import numpy as np
import pytest

from speechssl.tasks.emotion import EmotionResults, loso_folds, validation_split
from speechssl.tasks.metrics import unweighted_accuracy, weighted_accuracy

# an IEMOCAP-like layout: 5 sessions x 2 speakers, uneven utterance counts
SESSIONS = [f"Session{s}" for s in (1, 2, 3, 4, 5) for _ in range(2) for _ in range(3 + s)]
SPEAKERS = [f"Ses0{s}{g}" for s in (1, 2, 3, 4, 5) for g in "FM" for _ in range(3 + s)]


def test_loso_folds_partition_and_never_share_a_session():
    folds = loso_folds(SESSIONS)
    sessions = np.asarray(SESSIONS)
    assert [fold.session for fold in folds] == [f"Session{s}" for s in range(1, 6)]
    tests = np.concatenate([fold.test for fold in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(SESSIONS)))  # a partition
    for fold in folds:
        assert set(sessions[fold.test]) == {fold.session}
        assert fold.session not in set(sessions[fold.train])
        assert len(fold.train) + len(fold.test) == len(SESSIONS)


def test_validation_by_session_rotates_and_stays_out_of_test():
    sessions = np.asarray(SESSIONS)
    held_out = []
    for fold in loso_folds(SESSIONS):
        train, validation = validation_split(fold, SESSIONS, strategy="session")
        assert len(set(sessions[validation])) == 1
        held_out.append(sessions[validation][0])
        assert not set(train) & set(validation) and not set(validation) & set(fold.test)
        assert sorted(np.concatenate([train, validation]).tolist()) == fold.train.tolist()
    assert held_out == ["Session2", "Session3", "Session4", "Session5", "Session1"]


def test_validation_by_speaker_fraction_keeps_every_speaker_in_training():
    speakers = np.asarray(SPEAKERS)
    fold = loso_folds(SESSIONS)[0]
    train, validation = validation_split(
        fold, SESSIONS, strategy="speaker_fraction", speakers=SPEAKERS, fraction=0.25, seed=3
    )
    assert set(speakers[validation]) == set(speakers[train]) == set(speakers[fold.train])
    assert not set(train) & set(validation) and not set(validation) & set(fold.test)
    again = validation_split(fold, SESSIONS, "speaker_fraction", SPEAKERS, 0.25, seed=3)[1]
    np.testing.assert_array_equal(again, validation)  # seeded
    with pytest.raises(ValueError, match="needs the speakers"):
        validation_split(fold, SESSIONS, strategy="speaker_fraction")
    with pytest.raises(ValueError, match="strategy must be one of"):
        validation_split(fold, SESSIONS, strategy="random")


def test_loso_rejects_single_or_missing_sessions():
    with pytest.raises(ValueError, match="at least 2 sessions"):
        loso_folds(["S1", "S1"])
    with pytest.raises(ValueError, match="needs a session"):
        loso_folds(["S1", None, "S2"])


def test_results_aggregate_folds():
    rng = np.random.default_rng(0)
    results = EmotionResults(["neu", "hap", "ang", "sad"])
    all_true, all_pred, was, uas = [], [], [], []
    for session in ("Session1", "Session2", "Session3"):
        y_true = rng.integers(0, 4, 40)
        y_pred = np.where(rng.random(40) < 0.7, y_true, rng.integers(0, 4, 40))
        row = results.add_fold(session, y_true, y_pred)
        assert row["wa"] == pytest.approx(weighted_accuracy(y_true, y_pred))
        was.append(weighted_accuracy(y_true, y_pred))
        uas.append(unweighted_accuracy(y_true, y_pred))
        all_true.append(y_true)
        all_pred.append(y_pred)
    summary = results.summary()
    assert summary["wa_mean"] == pytest.approx(np.mean(was))
    assert summary["wa_std"] == pytest.approx(np.std(was))
    assert summary["ua_mean"] == pytest.approx(np.mean(uas))
    assert summary["ua_std"] == pytest.approx(np.std(uas))
    all_true, all_pred = np.concatenate(all_true), np.concatenate(all_pred)
    assert summary["pooled_wa"] == pytest.approx(weighted_accuracy(all_true, all_pred))
    assert summary["pooled_ua"] == pytest.approx(unweighted_accuracy(all_true, all_pred))
    assert np.asarray(summary["confusion"]).sum() == 120
    assert json.loads(json.dumps(summary)) == summary  # JSON-able as is
    table = results.to_markdown()
    assert "| Session2 | 40 |" in table
    assert f"{100 * summary['wa_mean']:.2f} ± {100 * summary['wa_std']:.2f}" in table
    assert "| neu |" in table and "| sad |" in table
    with pytest.raises(ValueError, match="no fold"):
        EmotionResults(["a", "b"]).summary()
