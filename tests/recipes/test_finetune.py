"""Smoke test of recipes/finetune: a user CSV of synthetic tones is learned well above
chance, every output is written, ``speechssl predict`` on the saved run repeats the
evaluation's labels, and bad user data ends with one stderr line and exit code 1."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechssl.cli import main as cli_main
from speechssl.testing import plant_bad_audio, write_labelled_csv, write_tone

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "finetune" / "run.py"
# class -> tone frequency: far apart on the mel scale, so a linear head on FBANK separates them
FREQUENCIES = {"low": 250.0, "mid": 1000.0, "high": 3500.0}
# the default head: the converged linear probe on the frozen FBANK upstream
SMALL = ["debug=tiny", "fbank_n_mels=40", "data.verify_audio=false"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``train.csv`` (10 tones per class, relative paths) and ``test.csv`` (4 per class)."""
    root = tmp_path_factory.mktemp("tones")
    sets = {}
    for name, count in (("train", 10), ("test", 4)):
        rows = []
        for label, frequency in FREQUENCIES.items():
            for index in range(count):
                relative = f"audio/{name}/{label}_{index}.wav"
                # a little frequency jitter and two durations, so utterances differ
                write_tone(
                    root / relative,
                    0.4 + 0.2 * (index % 2),
                    frequency=frequency * (1 + 0.03 * index),
                )
                rows.append((relative, label))
        sets[name] = write_labelled_csv(root / f"{name}.csv", rows)
    return root, sets


@pytest.fixture(scope="module")
def tiny_run(corpus, tmp_path_factory):
    root, sets = corpus
    run_dir = tmp_path_factory.mktemp("finetune_run")
    command = [
        sys.executable,
        str(RECIPE),
        *SMALL,
        "transfer.epochs=30",
        "transfer.lr=5e-3",
        f"data.train={sets['train']}",
        f"data.test={sets['test']}",
        f"run_dir={run_dir}",
    ]
    completed = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=300, cwd=root
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return run_dir


@pytest.mark.slow  # a whole-recipe run
def test_learns_the_tones_and_writes_every_output(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    for name in (
        "results.md",
        "confusion_matrix.png",
        "classification_report.txt",
        "labels.json",
        "model.json",
        "predictions.csv",
    ):
        assert (tiny_run / name).is_file(), name
    assert (
        results["labels"]
        == sorted(FREQUENCIES)
        == json.loads((tiny_run / "labels.json").read_text())
    )
    assert results["eval_set"] == "test" and results["num_test"] == 12
    # no data.valid: a stratified 10% of train (one per class) is held out
    assert results["num_valid"] == 3 and results["num_train"] == 27
    assert results["accuracy"] >= 0.75, results["accuracy"]  # chance is 1/3
    assert set(results["per_class"]) == set(FREQUENCIES)
    assert "precision" in (tiny_run / "classification_report.txt").read_text()


@pytest.mark.slow  # a whole-recipe run
def test_predict_repeats_the_evaluation(tiny_run, capsys):
    with open(tiny_run / "predictions.csv") as file:
        evaluated = [row for row in csv.DictReader(file) if row["set"] == "test"]
    paths = [row["path"] for row in evaluated]
    assert cli_main(["predict", str(tiny_run), *paths, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    predicted = [json.loads(line) for line in lines]
    assert [item["path"] for item in predicted] == paths
    assert [item["label"] for item in predicted] == [row["predicted"] for row in evaluated]
    for item, row in zip(predicted, evaluated):
        for label, probability in item["probabilities"].items():
            assert probability == pytest.approx(float(row[f"p_{label}"]), abs=1e-4)


@pytest.mark.slow  # a whole-recipe run
def test_predict_reports_a_missing_file_and_still_predicts_the_others(tiny_run, corpus, capsys):
    root, _ = corpus
    good = str(root / "audio" / "test" / "low_0.wav")
    assert cli_main(["predict", str(tiny_run), str(root / "nope.wav"), good, "--top", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"speechssl predict: {root / 'nope.wav'}: no such file"
    ]
    table = captured.out.splitlines()
    assert len(table) == 2 and table[1].startswith(good) and table[1].split()[1] in FREQUENCIES


# --- bad user data: one line on stderr, exit code 1 --------------------------------------


def _recipe_main():
    spec = importlib.util.spec_from_file_location("finetune_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run_in_process(overrides, monkeypatch, capfd) -> tuple[int, list[str]]:
    """The recipe's Hydra entry point in this process, as ``python run.py ...`` runs it (a
    subprocess per case would cost seconds of imports); the exit code is SystemExit's."""
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *overrides])
    with pytest.raises(SystemExit) as exit_info:
        _recipe_main()()
    return exit_info.value.code, capfd.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def bad_cases(corpus, tmp_path_factory):
    root, sets = corpus
    bad = tmp_path_factory.mktemp("bad")
    train_rows = list(csv.reader(sets["train"].read_text().splitlines()))[1:]
    plant_bad_audio(bad / "broken.wav", "unreadable")
    cases = {
        "unseen label": (
            [
                f"data.test={write_labelled_csv(bad / 'test.csv', [(str(root / train_rows[0][0]), 'loud')])}"
            ],
            "label 'loud'",
        ),
        "class without training example": (["data.labels=[high,low,mid,silent]"], "class 'silent'"),
        "unreadable audio": (
            [
                f"data.valid={write_labelled_csv(bad / 'valid.csv', [(str(bad / 'broken.wav'), 'low')])}"
            ],
            "broken.wav",
        ),
        "missing audio": (
            [f"data.valid={write_labelled_csv(bad / 'valid2.csv', [('gone.wav', 'low')])}"],
            "gone.wav listed in",
        ),
        "missing label column": (
            [f"data.valid={bad / 'columns.csv'}"],
            "has no 'label' column",
        ),
        "empty csv": ([f"data.valid={bad / 'empty.csv'}"], "is empty"),
        "header only": (
            [f"data.valid={write_labelled_csv(bad / 'header.csv', [])}"],
            "no data rows",
        ),
        "no such csv": ([f"data.valid={bad / 'absent.csv'}"], "absent.csv does not exist"),
    }
    (bad / "columns.csv").write_text("path,class\na.wav,low\n")
    (bad / "empty.csv").write_text("")
    return sets, bad, cases


@pytest.mark.parametrize(
    "case",
    [
        "unseen label",
        "class without training example",
        "unreadable audio",
        "missing audio",
        "missing label column",
        "empty csv",
        "header only",
        "no such csv",
    ],
)
def test_bad_data_is_one_line_and_exit_code_1(case, bad_cases, monkeypatch, capfd):
    sets, bad, cases = bad_cases
    overrides, expected = cases[case]
    overrides = [*SMALL, f"data.train={sets['train']}", f"run_dir={bad / 'run'}", *overrides]
    code, lines = _run_in_process(overrides, monkeypatch, capfd)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("finetune: error: "), lines
    assert expected in lines[0], lines[0]


@pytest.mark.slow  # a whole-recipe run
def test_onnx_export_of_the_run_predicts_like_speechssl_predict(tiny_run, tmp_path, capsys):
    """``speechssl export RUN_DIR OUT --format onnx`` holds encoder + head: onnxruntime's
    probabilities on test tones and demo speech equal ``speechssl predict``'s."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from speechssl import audio

    out = tmp_path / "onnx"
    assert cli_main(["export", str(tiny_run), str(out), "--format", "onnx"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == sorted(FREQUENCIES) and config["outputs"] == ["probabilities"]
    with open(tiny_run / "predictions.csv") as file:
        paths = [row["path"] for row in csv.DictReader(file) if row["set"] == "test"][:4]
    demo = sorted((REPO / "speechssl" / "demo_data" / "LJSpeech-1.1" / "wavs").glob("*.wav"))[:2]
    paths += [str(path) for path in demo]  # 22.05 kHz speech: resampled by both
    capsys.readouterr()
    assert cli_main(["predict", str(tiny_run), *paths, "--json"]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    session = onnxruntime.InferenceSession(
        str(out / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    for path, expected in zip(paths, predicted):
        wav = audio.load(path, config["sample_rate"])[None]  # (1, T)
        (probabilities,) = session.run(
            None, {"waveform": wav.numpy(), "lengths": np.array([wav.shape[1]], dtype=np.int64)}
        )
        assert config["labels"][int(probabilities[0].argmax())] == expected["label"], path
        for label, probability in zip(config["labels"], probabilities[0]):
            assert probability == pytest.approx(expected["probabilities"][label], abs=1e-4)


def test_the_default_lands_on_the_probe_of_speechssl_evaluate(tmp_path, monkeypatch, capsys):
    """The recipe's defaults on a frozen upstream score what ``speechssl evaluate UPSTREAM
    --task classify`` scores on the same sets (within 1 point): the frozen default is the
    converged probe, and its model predicts the probe's classes on the test files."""
    from speechssl.testing import write_class_problem

    rows = write_class_problem(tmp_path / "audio", 4, 72, seed=7)
    splits = {"train": rows[:40], "valid": rows[40:52], "test": rows[52:]}
    sets = {
        name: write_labelled_csv(tmp_path / f"{name}.csv", [(r["audio"], r["label"]) for r in part])
        for name, part in splits.items()
    }
    run_dir = tmp_path / "run"
    overrides = ["data.verify_audio=false", "fbank_n_mels=40", f"run_dir={run_dir}"]
    overrides += [f"data.{name}={path}" for name, path in sets.items()]
    monkeypatch.setattr(sys, "argv", [str(RECIPE), *overrides])
    try:
        _recipe_main()()
    except SystemExit as exit_info:
        assert exit_info.code == 0
    recipe = json.loads((run_dir / "results.json").read_text())
    assert recipe["head"] == "linear_probe" and recipe["training"]["head"] == "linear_probe"
    command = ["evaluate", "fbank", "--task", "classify", "--n-mels", "40", "--data"]
    command += [str(sets["train"]), "--valid", str(sets["valid"]), "--test", str(sets["test"])]
    assert cli_main([*command, "--out", str(tmp_path / "evaluate")]) == 0
    capsys.readouterr()
    ruler = json.loads((tmp_path / "evaluate" / "results.json").read_text())
    (cell,) = [row for row in ruler["table"] if row["metric"] == "accuracy"]
    assert abs(100 * recipe["accuracy"] - cell["mean"]) <= 1.0, (recipe["accuracy"], cell)
    assert recipe["accuracy"] > 0.5  # chance is 1/4: the problem is learnt, not trivial
