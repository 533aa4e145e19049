"""The end of pre-training says whether the model beat its baselines; the plot draws them."""

import json
import logging

from speechssl.train.curves import panel_names, plot_curves
from speechssl.train.pretrain import learning_check


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_model_that_does_not_beat_copy_last_gets_one_warning_line_and_a_results_entry(
    tmp_path, caplog, monkeypatch
):
    # logging set up earlier in the same process (a dictConfig run in-process) may have
    # disabled this logger or stopped it propagating to the root logger caplog listens on
    monkeypatch.setattr(logging.getLogger("speechssl.train"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("speechssl.train"), "disabled", False)
    rows = [
        {"step": 10, "split": "train", "loss": 0.5, "l1_shift3": 0.5, "l1_shift3_baseline": 0.6},
        {
            "step": 10,
            "split": "valid",
            "loss": 0.7,
            "l1_shift3": 0.7,
            "l1_shift3_baseline": 0.6,
            "l1_shift3_ratio": 1.5,  # a mean of per-batch ratios
        },
    ]
    path = _write(tmp_path / "metrics.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="speechssl.train"):
        result = learning_check(path)
    # the validation row decides (the last one of the run), not the training window; the
    # ratio is that of its means
    assert result["learning_signals"] == {
        "split": "valid",
        "step": 10,
        "l1_shift3": 0.7,
        "l1_shift3_baseline": 0.6,
        "l1_shift3_ratio": 0.7 / 0.6,
    }
    (line,) = result["learning_warnings"]
    assert "l1_shift3 = 0.7 does not beat its baseline 0.6" in line
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_without_validation_the_last_training_row_decides_and_a_learner_passes(tmp_path, caplog):
    rows = [
        {"step": 5, "split": "train", "accuracy_masked": 0.1, "accuracy_masked_baseline": 0.2},
        {"step": 10, "split": "train", "accuracy_masked": 0.4, "accuracy_masked_baseline": 0.2},
    ]
    with caplog.at_level(logging.WARNING, logger="speechssl.train"):
        result = learning_check(_write(tmp_path / "metrics.jsonl", rows))
    assert result["learning_signals"]["step"] == 10 and result["learning_warnings"] == []
    assert not caplog.records
    assert learning_check(tmp_path / "absent.jsonl") == {}


def test_the_plot_puts_signals_with_a_baseline_first_and_draws_the_baseline_in_their_panel(
    tmp_path,
):
    rows = [
        {
            "step": step,
            "split": "train",
            "loss": 1 / step,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "mask_fraction": 0.5,
            "accuracy_masked": 0.1 * step,
            "accuracy_masked_baseline": 0.2,
        }
        for step in range(1, 5)
    ] + [
        {
            "step": 4,
            "split": "valid",
            "loss": 0.3,
            "accuracy_masked": 0.35,
            "accuracy_masked_baseline": 0.2,
        }
    ]
    path = _write(tmp_path / "metrics.jsonl", rows)
    assert panel_names(rows) == ["loss", "lr", "accuracy_masked", "mask_fraction"]
    assert plot_curves(path, tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
