"""A recipe given a corpus folder that does not exist stops before any work, with one
line naming the option, exit code 1 and no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "recipe, option",
    [("tpc", "emotion.src"), ("hubert_sat", "speaker.src"), ("tts_pretrain", "target.src")],
)
def test_missing_source_folder_is_one_line_before_any_work(recipe, option, tmp_path):
    missing = tmp_path / "no_such_corpus"
    run_dir = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / recipe / "run.py"),
            "debug=tiny",
            f"{option}={missing}",
            f"run_dir={run_dir}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1] == (
        f"{recipe}: error: {option}: folder not found: {missing}"
    )
    # nothing was prepared or trained: the check ran first
    assert not (run_dir / "data").exists() and not (run_dir / "pretrain").exists()
    if recipe != "tts_pretrain":  # its door runs before Hydra starts: no run_dir at all
        assert not run_dir.exists()
