"""Outputs never overwrite what they did not write (issue 24): a folder holds one export,
``evaluate --out`` and the recipes refuse a folder of another command's or unknown files
unless forced, exports follow the umask, and ``run_dir=`` (empty) is refused."""

from __future__ import annotations

import copy
import functools
import os
import stat

import pytest
from conftest import assert_one_line_error, snapshot

import speechssl
from speechssl.config import compose
from speechssl.errors import run_recipe
from speechssl.safe_io import OUTPUT_MARKER


@pytest.fixture
def first_export(cli, tmp_path):
    """``speechssl export hubert_tiny OUT`` (safetensors): the folder and its files."""
    out = tmp_path / "export"
    code, _, stderr = cli("export", "hubert_tiny", out)
    assert code == 0, stderr
    return out, snapshot(out)


def test_a_second_export_into_the_same_folder_is_refused_and_the_first_still_loads(
    cli, first_export
):
    out, files = first_export
    code, _, stderr = cli("export", "hubert_tiny", out, "--format", "onnx")
    assert_one_line_error(code, stderr, "already holds export outputs")
    assert snapshot(out) == files
    assert speechssl.load_encoder(out).family == "wav2vec2"


def test_force_replaces_the_export_and_the_folder_holds_one(cli, first_export):
    out, _ = first_export
    code, _, stderr = cli("export", "fbank_transformer_tiny", out, "--force")
    assert code == 0, stderr
    assert speechssl.load_encoder(out).family == "fbank_transformer"
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", OUTPUT_MARKER]
    )


def test_export_into_a_folder_of_other_files_is_refused(cli, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "own settings"}\n')
    code, _, stderr = cli("export", "hubert_tiny", out)
    assert_one_line_error(code, stderr, "is not empty (config.json)")
    assert (out / "config.json").read_text() == '{"my": "own settings"}\n'


def test_exports_follow_the_umask(cli, tmp_path):
    previous = os.umask(0o022)
    try:
        code, _, stderr = cli("export", "hubert_tiny", tmp_path / "export")
    finally:
        os.umask(previous)
    assert code == 0, stderr
    for name in ("model.safetensors", "config.json"):
        mode = stat.S_IMODE((tmp_path / "export" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_evaluate_refuses_to_write_over_a_fine_tuning_run(cli, tmp_path):
    run_dir = tmp_path / "finetune_run"
    run_dir.mkdir()
    (run_dir / OUTPUT_MARKER).write_text('{"kind": "finetune"}\n')
    (run_dir / "results.json").write_text('{"table": "of the fine-tuning run"}\n')
    (run_dir / "results.md").write_text("| the fine-tuning run |\n")
    before = snapshot(run_dir)
    data = tmp_path / "no_data_needed"
    data.mkdir()
    code, _, stderr = cli(
        "evaluate", "fbank", "--task", "emotion", "--data", data, "--out", run_dir
    )
    assert_one_line_error(code, stderr, "holds a finetune run, not evaluate outputs")
    assert snapshot(run_dir) == before


def test_evaluate_refuses_a_folder_of_unknown_files(cli, tmp_path):
    out = tmp_path / "papers"
    out.mkdir()
    (out / "results.md").write_text("my notes\n")
    code, _, stderr = cli(
        "evaluate", "fbank", "--task", "emotion", "--data", tmp_path, "--out", out
    )
    assert_one_line_error(code, stderr, "is not empty (results.md)")
    assert (out / "results.md").read_text() == "my notes\n"


@functools.cache
def _composed(name: str):
    return compose(name, ["debug=tiny"])


def _door(name: str, run_dir, force: bool = False) -> tuple[int, str]:
    """The recipe's door with a function that does no work: what the claim decides."""
    cfg = copy.deepcopy(_composed(name))
    cfg.run_dir, cfg.force = str(run_dir), force
    ran = []
    try:
        run_recipe(name, ran.append, cfg)
        return 0, "ran" if ran else "did not run"
    except SystemExit as stop:
        return int(stop.code or 0), ""


def test_recipe_refuses_a_run_dir_of_another_recipe_or_unknown_files(tmp_path, capsys):
    tpc = tmp_path / "tpc_run"
    assert _door("tpc", tpc) == (0, "ran")
    assert _door("tpc", tpc) == (0, "ran")  # its own earlier run: resumed
    code, _ = _door("hubert_sat", tpc)
    assert_one_line_error(code, capsys.readouterr().err, "holds a tpc run, not hubert_sat")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me\n")
    code, _ = _door("tpc", notes)
    assert_one_line_error(code, capsys.readouterr().err, "force=true")
    assert _door("tpc", notes, force=True) == (0, "ran")
    assert (notes / "todo.txt").read_text() == "keep me\n"


@pytest.mark.parametrize("name", ["tpc", "hubert_sat", "tts_pretrain", "finetune"])
def test_empty_run_dir_is_refused(recipe, tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stderr = recipe(name, "run_dir=")
    assert_one_line_error(code, stderr, "run_dir: empty")
    assert list(tmp_path.iterdir()) == []
