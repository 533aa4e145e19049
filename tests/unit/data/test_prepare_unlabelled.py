"""``speechssl prepare folder`` on unlabelled audio (issue 28, item 6).

A flat folder (audio at the top level only) prepares without a flag, a nested tree with
``--unlabelled``; no file kept is exit 1 with one line; and the hubert_sat README's path
("prepare LibriLight with ``speechssl prepare folder`` and point
``pretrain.train_splits`` at it") works as written.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from speechssl import cli, testing
from speechssl.config import compose
from speechssl.data.manifest import read_jsonl

REPO = Path(__file__).resolve().parents[3]


def _flat_folder(root: Path, count: int = 4) -> Path:
    for index in range(count):
        testing.write_tone(root / f"clip_{index}.flac", 0.3, frequency=200 + 50 * index)
    return root


def test_a_flat_folder_prepares_every_file_as_an_unlabelled_row(tmp_path, capsys):
    src = _flat_folder(tmp_path / "flat")
    assert cli.main(["prepare", "folder", str(src), str(tmp_path / "out")]) == 0
    rows = list(read_jsonl(tmp_path / "out" / "all.jsonl"))
    assert sorted(row["id"] for row in rows) == [f"clip_{i}" for i in range(4)]
    assert all("label" not in row for row in rows)
    assert "all.jsonl: 4 utterances" in capsys.readouterr().out


def test_unlabelled_reads_a_nested_tree_without_taking_folders_for_classes(tmp_path):
    # LibriLight-style <speaker>/<book>/<file>.flac
    for speaker in ("100", "200"):
        testing.write_tone(tmp_path / "ll" / speaker / "book" / f"{speaker}_0.flac")
    assert cli.main(["prepare", "folder", str(tmp_path / "ll"), str(tmp_path / "out")]) == 0
    labelled = list(read_jsonl(tmp_path / "out" / "all.jsonl"))
    assert {row["label"] for row in labelled} == {"100", "200"}  # without the flag: classes
    arguments = ["prepare", "folder", str(tmp_path / "ll"), str(tmp_path / "out2"), "--unlabelled"]
    assert cli.main(arguments) == 0
    rows = list(read_jsonl(tmp_path / "out2" / "all.jsonl"))
    assert [row["id"] for row in rows] == ["100/book/100_0", "200/book/200_0"]
    assert all("label" not in row for row in rows)


def test_no_file_kept_is_exit_1_with_one_line(tmp_path, capsys):
    src = tmp_path / "bad"
    for index in range(3):
        testing.plant_bad_audio(src / f"clip_{index}.wav", "truncated")
    assert cli.main(["prepare", "folder", str(src), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no file kept" in error and "truncated=3" in error
    assert len((tmp_path / "out" / "skipped.jsonl").read_text().splitlines()) == 3


def test_the_hubert_sat_readme_path_pretrains_on_a_prepared_folder(tmp_path):
    """README: ``speechssl prepare folder /data/LibriLight manifests/librilight --unlabelled``,
    then ``'pretrain.train_splits=[<abs>/manifests/librilight/all.jsonl]'``."""
    readme = (REPO / "recipes" / "hubert_sat" / "README.md").read_text()
    assert "speechssl prepare folder /data/LibriLight manifests/librilight --unlabelled" in readme
    assert '"pretrain.train_splits=[$PWD/manifests/librilight/all.jsonl]"' in readme
    src = _flat_folder(tmp_path / "LibriLight", count=5)
    manifests = tmp_path / "manifests" / "librilight"
    assert cli.main(["prepare", "folder", str(src), str(manifests), "--unlabelled"]) == 0
    librispeech = testing.make_librispeech_tree(tmp_path, subsets=("dev-clean",))
    overrides = [
        f"pretrain.src={librispeech}",
        f"pretrain.train_splits=[{manifests / 'all.jsonl'}]",
        "pretrain.valid_splits=[dev-clean]",
        "pretrain.voxceleb_splits=[]",
    ]
    spec = importlib.util.spec_from_file_location(
        "hubert_sat_recipe", REPO / "recipes/hubert_sat/run.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    data = recipe.pretraining_data(compose("hubert_sat", overrides))
    train, valid = data.manifests(tmp_path / "run" / "data")
    train_rows = list(read_jsonl(train))
    assert sorted(row["id"] for row in train_rows) == [f"clip_{i}" for i in range(5)]
    assert len(list(read_jsonl(valid))) > 0
    assert json.loads((manifests / "summary.json").read_text())["unlabelled"] is True
