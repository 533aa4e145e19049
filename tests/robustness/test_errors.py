"""The one error boundary: which failures become one line, and that bugs keep their traceback."""

from __future__ import annotations

import errno
import pickle

import pytest
from conftest import POISON_KINDS, assert_one_line_error, snapshot, write_poison
from safetensors import SafetensorError

from speechssl.errors import MAX_LINE, exit_on_bad_input, one_line
from speechssl.safe_io import atomic_write


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/runs/a/x.pt"),
            "disk full at /runs/a/x.pt",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (
            PermissionError(errno.EACCES, "Permission denied", "/runs/a"),
            "Permission denied: /runs/a",
        ),
        (
            NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file/b"),
            "Not a directory: /a/file/b",
        ),
        (ValueError("trainer.max_steps must be >= 0"), "trainer.max_steps must be >= 0"),
        (pickle.UnpicklingError("invalid load key, 'x'."), "invalid load key, 'x'."),
        (SafetensorError("Error while deserializing header"), "Error while deserializing header"),
        (
            RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 320 vs 256"),
            "a file write failed; is the disk full?",
        ),
    ],
)
def test_expected_failures_become_one_line(error, expected):
    assert one_line(error).startswith(expected)


@pytest.mark.parametrize(
    "error",
    [
        KeyError("config"),
        TypeError("unsupported operand"),
        RuntimeError("CUDA error"),
        IndexError(),
    ],
)
def test_bugs_are_not_hidden(error):
    assert one_line(error) is None

    def buggy():
        raise error

    with pytest.raises(type(error)):
        exit_on_bad_input("speechssl test", buggy)


def test_long_and_many_line_messages_are_clipped_to_one_line(capsys):
    def fails():
        raise ValueError(
            "first line\n" + "x" * 5000 + "\nIf you fully trust the source, weights_only=False"
        )

    with pytest.raises(SystemExit) as stop:
        exit_on_bad_input("speechssl test", fails)
    line = assert_one_line_error(stop.value.code, capsys.readouterr().err, "first line")
    assert len(line) <= MAX_LINE


def test_atomic_write_turns_a_full_disk_into_disk_full_at_the_final_path(tmp_path, monkeypatch):
    target = tmp_path / "manifest.jsonl"
    target.write_text("old\n")

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught, atomic_write(target) as file:
        FullDisk().write("new")
        file.write("never")
    assert one_line(caught.value) == f"disk full at {target}"
    assert target.read_text() == "old\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.jsonl"]


@pytest.fixture(scope="module")
def finetune_run_dir(tmp_path_factory):
    """A finetune run folder whose demo data is already prepared (by a first refused run)."""
    return tmp_path_factory.mktemp("finetune") / "run"


@pytest.mark.parametrize("kind", ["text", "crafted-pickle", "random-bytes", "a-list", "mixed-keys"])
def test_finetune_upstream_poisoned_file_is_one_line(recipe, tmp_path, finetune_run_dir, kind):
    upstream = write_poison(tmp_path / "upstream.pt", kind)
    if finetune_run_dir.exists():
        before = snapshot(finetune_run_dir)
    else:
        before = None
    code, stderr = recipe("finetune", f"run_dir={finetune_run_dir}", f"upstream={upstream}")
    assert_one_line_error(code, stderr, "finetune: error: upstream=")
    if before is not None:
        assert snapshot(finetune_run_dir) == before
    assert not (tmp_path / "executed").exists()
    assert kind in POISON_KINDS


def test_full_disk_while_plotting_names_the_plot_and_keeps_the_old_one(tmp_path, monkeypatch):
    import matplotlib.figure
    import matplotlib.pyplot as plt

    from speechssl.tasks.plots import save_figure

    path = tmp_path / "accuracy.png"
    save_figure(plt.figure(), path)
    before = path.read_bytes()

    def full_disk(self, file, **kwargs):
        file.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    with pytest.raises(OSError) as caught:
        save_figure(plt.figure(), path)
    assert one_line(caught.value) == f"disk full at {path}"
    assert path.read_bytes() == before
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["accuracy.png"]
