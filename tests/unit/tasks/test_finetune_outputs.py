"""speechssl.tasks.finetune: scores of a set's predictions and the finetune run's files."""

import csv
import json

import pytest
import torch

from speechssl.tasks.classification import Predictions
from speechssl.tasks.finetune import budget_line, score_predictions, write_finetune_outputs

LABELS = ["ang", "neu", "sad"]


def _scored(num: int, wrong: set[int]) -> tuple[list[dict], dict]:
    """Rows cycling through the labels, predicted right except at the ``wrong`` indices."""
    rows = [
        {"id": f"u{i}", "audio": f"/audio/u{i}.wav", "label": LABELS[i % 3]} for i in range(num)
    ]
    y_true = torch.tensor([i % 3 for i in range(num)])
    y_pred = torch.tensor([(i + 1) % 3 if i in wrong else i % 3 for i in range(num)])
    probabilities = torch.full((num, 3), 0.1)
    probabilities[torch.arange(num), y_pred] = 0.8
    return rows, score_predictions(rows, Predictions(y_true, y_pred, probabilities), LABELS)


def test_scores_match_the_predictions():
    _, score = _scored(30, wrong={0, 3, 6})  # three "ang" utterances called "neu"
    assert score["accuracy"] == pytest.approx(27 / 30)
    assert score["unweighted_accuracy"] == pytest.approx((7 / 10 + 1 + 1) / 3)
    low, high = score["accuracy_ci95"]
    assert low < score["accuracy"] < high <= 1.0
    assert score["per_class"]["ang"]["recall"] == pytest.approx(0.7)
    assert score["per_class"]["neu"]["precision"] == pytest.approx(10 / 13)
    assert score["confusion_matrix"][0] == [7, 3, 0]
    assert score["num_utterances"] == 30
    first = score["predictions"][0]
    assert (first["id"], first["label"], first["predicted"]) == ("u0", "ang", "neu")
    assert first["probabilities"] == {"ang": 0.1, "neu": 0.8, "sad": 0.1}


def test_budget_line_warns_while_still_improving():
    report = {
        "epochs": 60,
        "max_epochs": 60,
        "steps": 480,
        "best_epoch": 60,
        "stop": "epochs",
        "still_improving": True,
    }
    line = budget_line(report)
    assert "stopped on the epoch cap" in line and line.endswith("raise transfer.epochs.")


def test_outputs_of_a_run(tmp_path):
    _, valid = _scored(6, wrong=set())
    rows_test, test = _scored(9, wrong={1})
    summary = {
        "upstream": "fbank",
        "upstream_kind": "fbank",
        "head_mode": "frozen",
        "labels": LABELS,
        "num_train": 30,
        "num_valid": 6,
        "num_test": 9,
        "valid_source": "data.valid",
        "budget_line": "Trained 3 of at most 3 epochs.",
    }
    table = write_finetune_outputs(tmp_path, summary, {"valid": valid, "test": test}, LABELS)
    assert table.splitlines()[2].startswith("| valid | 6 | 100.0 [")
    assert table.splitlines()[3].startswith("| test | 9 | 88.9 [")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["eval_set"] == "test" and results["accuracy"] == pytest.approx(8 / 9)
    assert set(results["test"]) == set(test) - {"report_text", "predictions"}
    assert results["upstream"] == "fbank" and set(results["per_class"]) == set(LABELS)
    with open(tmp_path / "predictions.csv", newline="") as file:
        written = list(csv.reader(file))
    assert written[0] == ["set", "path", "label", "predicted", "p_ang", "p_neu", "p_sad"]
    assert [row[0] for row in written[1:]] == ["valid"] * 6 + ["test"] * 9
    assert written[8][1:4] == [rows_test[1]["audio"], "neu", "sad"]
    report = (tmp_path / "classification_report.txt").read_text()
    assert report.startswith("test set, upstream fbank") and "precision" in report
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert "# Fine-tuning: fbank (fbank, head frozen)" in (tmp_path / "results.md").read_text()
    # without a test set the valid set is the one reported
    write_finetune_outputs(tmp_path, summary, {"valid": valid}, LABELS)
    assert json.loads((tmp_path / "results.json").read_text())["eval_set"] == "valid"
