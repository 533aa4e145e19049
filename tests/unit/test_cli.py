"""Every ``speechssl`` help page prints and exits 0 (issue 28: ``--help`` crashed on a ``%``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS)])
def test_every_help_exits_0(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: speechssl") and "Traceback" not in printed
    if not command:  # the top level lists every subcommand with its help line
        words = " ".join(printed.split())  # however the terminal width wrapped it
        assert all(name in words for name in SUBCOMMANDS) and "95% CIs" in words


def test_the_console_help_exits_0():
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "speechssl.cli", "--help"],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "evaluate" in done.stdout and done.stderr == ""
