"""Shared pieces of the robustness suite: a hostile user's inputs at every entry point.

Each case runs an entry point in-process (the CLI's ``main``, a recipe's door
:func:`speechssl.errors.run_recipe`, ``speechssl.load_encoder``) and checks the contract of
issue 15: exit code 1, exactly one stderr line under 300 characters, no traceback, and the
run folder's earlier outputs untouched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from speechssl.cli import main as cli_main
from speechssl.errors import MAX_LINE, run_recipe

REPO = Path(__file__).resolve().parents[2]


class RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_poison(path: Path, kind: str, good: Path | None = None) -> Path:
    """Write a bad ``.pt`` file of ``kind`` at ``path`` (a catalogue of what a user may hand us).

    ``good`` is a valid checkpoint that ``truncated`` and ``wrong-shapes`` start from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        path.write_text("this is a README, not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(bytes(range(256)) * 40)
    elif kind == "crafted-pickle":
        torch.save({"model": {}, "step": 1, "payload": RunsCode(path.parent / "executed")}, path)
    elif kind == "legacy-pickle":
        path.write_bytes(pickle.dumps(["not", "a", "checkpoint"]))
    elif kind == "a-list":
        torch.save([1, 2, 3], path)
    elif kind == "mixed-keys":
        torch.save({1: torch.zeros(1), "model": {"w": torch.zeros(1)}, "step": "x"}, path)
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "wrong-shapes":
        state = torch.load(good, weights_only=True)
        state["model"] = {
            key: torch.zeros(*(size + 1 for size in value.shape)) if value.dim() else value
            for key, value in state["model"].items()
        }
        torch.save(state, path)
    else:
        raise ValueError(kind)
    return path


POISON_KINDS = (
    "text",
    "empty",
    "random-bytes",
    "crafted-pickle",
    "legacy-pickle",
    "a-list",
    "mixed-keys",
    "truncated",
    "wrong-shapes",
)


def assert_one_line_error(code: int, stderr: str, expect: str = "") -> str:
    """The contract of a refused input; returns the line."""
    assert code == 1, stderr
    assert "Traceback" not in stderr, stderr
    # what a terminal shows: a progress bar that erased itself with "\r" leaves nothing
    lines = [line.split("\r")[-1] for line in stderr.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1, stderr
    assert len(lines[0]) < MAX_LINE, lines[0]
    assert "weights_only=False" not in lines[0]
    assert expect in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder`` (the lock file aside)."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit code, stdout, stderr)`` of ``speechssl`` in this process."""

    def call(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def _load_recipe(name: str):
    path = REPO / "recipes" / name / "run.py"
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def recipes():
    """``{name: recipe module}`` of the four recipes (imported once)."""
    return {name: _load_recipe(name) for name in ("tpc", "hubert_sat", "tts_pretrain", "finetune")}


@pytest.fixture
def recipe(recipes, capsys):
    """``recipe(name, *overrides) -> (exit code, stderr)`` through the recipe's door."""
    from speechssl.config import compose

    def call(name: str, *overrides: str) -> tuple[int, str]:
        cfg = compose(name, ["debug=tiny", *overrides])
        capsys.readouterr()
        try:
            run_recipe(name, recipes[name].run, cfg, getattr(recipes[name], "door", None))
            code = 0
        except SystemExit as stop:
            code = int(stop.code or 0)
        return code, capsys.readouterr().err

    return call
