"""``speechssl probe-steps``: every checkpoint and the random init scored layer by layer."""

from __future__ import annotations

import json

import pytest
import torch

from speechssl.cli import main
from speechssl.encoders import build_encoder
from speechssl.tasks.probe_steps import checkpoints_by_step, probe_over_steps
from speechssl.tasks.suite import TaskOutcome
from speechssl.testing import write_labelled_csv, write_tone


def _save_step(folder, step: int, encoder) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": encoder.state_dict(), "encoder_spec": {**encoder.spec(), "prefix": ""}},
        folder / f"step_{step:08d}.pt",
    )


def _checkpoints(folder, steps=(200, 100)):
    """A tpc_tiny per step (saved out of order: the listing sorts by step)."""
    encoders = {}
    for step in steps:
        torch.manual_seed(step)
        encoders[step] = build_encoder("tpc_tiny")
        _save_step(folder, step, encoders[step])
    return encoders


def test_each_step_scores_its_own_weights_and_step_0_a_fresh_init(tmp_path):
    saved = _checkpoints(tmp_path / "checkpoints")
    seen = []

    def score(upstream):
        encoder = upstream.build(upstream.seeds[0])
        seen.append((upstream.name, encoder))
        # two folds reading 2 hidden states: the row averages them
        details = [
            {"probe": {"dev_accuracy_per_layer": [0.5, 0.7]}},
            {"probe": {"dev_accuracy_per_layer": [0.7, 0.9]}},
        ]
        y_true = torch.tensor([0, 1, 1, 0]).numpy()
        return TaskOutcome("speaker_id", upstream.name, y_true, [y_true], [0], details)

    rows = probe_over_steps(score, checkpoints_by_step(tmp_path / "checkpoints"), seed=3)
    assert [row["step"] for row in rows] == [0, 100, 200]
    assert rows[1]["dev_accuracy_per_layer"] == pytest.approx([0.6, 0.8])
    assert rows[1]["dev_accuracy_layer_average"] is None  # tpc_tiny has 3 hidden states
    assert rows[1]["mean"] == 100.0 and rows[0]["checkpoint"] == "random init (seed 3)"
    names = [name for name, _ in seen]
    assert names == ["step_0", "step_100", "step_200"]
    fresh, first, second = (encoder.state_dict() for _, encoder in seen)
    for key, value in saved[100].state_dict().items():
        assert torch.equal(first[key], value) and torch.equal(
            second[key], saved[200].state_dict()[key]
        )
    # the same architecture, other weights: a random init, not a copy of a checkpoint
    assert fresh.keys() == first.keys()
    assert any(
        not torch.equal(fresh[key], first[key]) for key in fresh if fresh[key].is_floating_point()
    )


def test_the_command_writes_a_table_per_step_and_refuses_an_empty_folder(tmp_path, capsys):
    _checkpoints(tmp_path / "checkpoints", steps=(50,))
    sets = {}
    for name, count in (("train", 6), ("valid", 3), ("test", 3)):
        rows = [
            (str(write_tone(tmp_path / name / f"{label}{i}.wav", 0.4, frequency=frequency)), label)
            for label, frequency in (("low", 300.0), ("high", 2500.0))
            for i in range(count)
        ]
        sets[name] = write_labelled_csv(tmp_path / f"{name}.csv", rows)
    out = tmp_path / "out"
    arguments = ["--data", str(sets["train"]), "--valid", str(sets["valid"])]
    arguments += ["--test", str(sets["test"]), "--out", str(out)]
    code = main(["probe-steps", str(tmp_path / "checkpoints"), "--task", "classify", *arguments])
    assert code == 0
    result = json.loads((out / "probe_steps.json").read_text())
    assert result["task"] == "classification" and [r["step"] for r in result["steps"]] == [0, 50]
    # tpc_tiny: the input and its 2 layers, then the probe's try on their average
    assert all(len(row["dev_accuracy_per_layer"]) == 3 for row in result["steps"])
    assert all(row["dev_accuracy_layer_average"] == 1.0 for row in result["steps"])
    # two pure tones an octave-plus apart: any encoder's probe separates them
    assert all(row["mean"] == 100.0 for row in result["steps"])
    assert (out / "probe_steps.png").stat().st_size > 0
    assert "| 50 | 100.0" in (out / "probe_steps.md").read_text()

    (tmp_path / "empty").mkdir()
    code = main(["probe-steps", str(tmp_path / "empty"), "--task", "classify", *arguments])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(error) == 1 and "no step_XXXXXXXX.pt checkpoints" in error[0]
