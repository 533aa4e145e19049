"""Atomic writes, safe loading, truncated-file fallback, RNG round trip."""

import os
import random
import warnings

import numpy as np
import pytest
import torch

from speechssl.train.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)


class _RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state(step):
    return {"model": {"weight": torch.full((3,), float(step))}, "step": step}


def test_truncated_checkpoint_is_skipped_for_the_previous_one(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(_state(step), tmp_path, step)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping checkpoint.*step_00000003"):
        path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "step_00000002.pt" and state["step"] == 2


def test_checkpoint_that_would_run_code_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"
    torch.save(
        {"model": {}, "step": 5, "payload": _RunsCode(marker)}, tmp_path / "step_00000005.pt"
    )
    with pytest.raises(UnsafeCheckpointError, match=r"step_00000005\.pt: refused to load.*system"):
        load_checkpoint(tmp_path / "step_00000005.pt")
    # resume=auto skips it, saying so, for the newest usable checkpoint (issue 15)
    save_checkpoint(_state(1), tmp_path, 1)
    with pytest.warns(UserWarning, match=r"skipping checkpoint.*step_00000005\.pt: refused"):
        path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "step_00000001.pt" and state["step"] == 1
    assert not marker.exists()


def test_save_refuses_values_that_could_not_be_loaded_safely(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\] is a ndarray"):
        save_checkpoint({"model": {}, "step": 1, "extra": np.zeros(2)}, tmp_path, 1)
    assert list_checkpoints(tmp_path) == [] and os.listdir(tmp_path) == []


def test_no_temporary_file_left_and_prune_keeps_newest(tmp_path):
    for step in range(1, 6):
        save_checkpoint(_state(step), tmp_path, step)
    assert sorted(os.listdir(tmp_path)) == [f"step_{s:08d}.pt" for s in range(1, 6)]
    prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000005.pt"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_latest_checkpoint(tmp_path)[1]["step"] == 5


def test_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = save_checkpoint({"model": {}, "step": 0, "rng": capture_rng_state()}, tmp_path, 0)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
