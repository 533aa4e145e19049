"""``speechssl predict``: a saved run reloads to the same model, prints a table or JSON
lines, and reports unreadable files on one line each while predicting the others."""

import json

import pytest
import torch

from speechssl.cli import main as cli_main
from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig
from speechssl.heads import ClassifierHeadConfig, FbankUpstream, build_transfer_model
from speechssl.tasks.classification import TrainedClassifier, TransferConfig, predict
from speechssl.tasks.predict import load_run, write_model_file
from speechssl.testing import plant_bad_audio, write_tone

LABELS = ["high", "low", "mid"]


@pytest.fixture
def saved_run(tmp_path):
    """A run folder as the recipe leaves it: random head weights in ``best.pt`` + model.json."""
    torch.manual_seed(0)
    head = ClassifierHeadConfig(projector_dim=8)
    model = build_transfer_model(head, FbankUpstream(n_mels=24), num_classes=len(LABELS)).eval()
    (tmp_path / "train" / "checkpoints").mkdir(parents=True)
    torch.save(
        {"model": model.state_dict(), "step": 1}, tmp_path / "train" / "checkpoints" / "best.pt"
    )
    data = DataConfig(max_batch_seconds=4.0, num_workers=0)
    trained = TrainedClassifier(
        model, tmp_path / "train", 0.5, {}, tmp_path / "train" / "checkpoints" / "best.pt"
    )
    write_model_file(
        tmp_path,
        trained,
        upstream="fbank",
        upstream_kind="fbank",
        head=head,
        labels=LABELS,
        data=data,
    )
    files = [
        str(write_tone(tmp_path / f"{i}.wav", 0.3 + 0.1 * i, frequency=200 * (i + 1)))
        for i in range(3)
    ]
    return tmp_path, model, data, files


def test_reloaded_run_gives_the_saved_models_probabilities(saved_run):
    run_dir, model, data, files = saved_run
    loaded = load_run(run_dir)
    assert loaded.labels == LABELS
    rows = [
        {"id": str(i), "audio": path, "duration": 0.3 + 0.1 * i, "sample_rate": 16000}
        for i, path in enumerate(files)
    ]
    expected = predict(
        model, Manifest.from_rows(rows), TransferConfig(data=data), label_column=None
    )
    got = predict(loaded.model, Manifest.from_rows(rows), loaded.transfer_config, label_column=None)
    torch.testing.assert_close(got.probabilities, expected.probabilities)


def test_json_lines_and_top_k(saved_run, capsys):
    run_dir, _, _, files = saved_run
    assert cli_main(["predict", str(run_dir), *files, "--json", "--top", "2"]) == 0
    items = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["path"] for item in items] == files
    for item in items:
        ranked = list(item["probabilities"].items())
        assert len(ranked) == 2 and ranked[0][0] == item["label"] and ranked[0][1] >= ranked[1][1]
    assert cli_main(["predict", str(run_dir), files[0]]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["file", "prediction", "probabilities"]
    assert row.split()[0] == files[0] and len(row.split()) == 2 + 2 * len(LABELS)


def test_bad_files_are_one_line_each_and_the_rest_is_predicted(saved_run, capsys):
    run_dir, _, _, files = saved_run
    broken = run_dir / "broken.wav"
    plant_bad_audio(broken, "unreadable")
    code = cli_main(
        ["predict", str(run_dir), str(run_dir / "gone.wav"), files[1], str(broken), "--json"]
    )
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert (
        len(errors) == 2
        and "gone.wav: no such file" in errors[0]
        and "broken.wav: cannot read audio" in errors[1]
    )
    assert [json.loads(line)["path"] for line in captured.out.splitlines()] == [files[1]]


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    write_tone(tmp_path / "a.wav")
    assert cli_main(["predict", str(tmp_path), str(tmp_path / "a.wav")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "model.json missing" in error
