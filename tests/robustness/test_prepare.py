"""``speechssl prepare`` under a hostile user's inputs, for every corpus layout.

A bad source or output folder is one line and exit code 1 with earlier outputs untouched;
an input that cannot be used is a counted skip in ``skipped.jsonl``; nothing is lost or
hidden (a report never overwrites a manifest, an unreadable folder never vanishes, a
re-preparation leaves no stale split behind, a duplicate never reaches two splits).
"""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
from conftest import assert_one_line_error, snapshot

from speechssl import testing
from speechssl.data.manifest import read_jsonl

CORPORA = (
    "librispeech",
    "voxceleb1",
    "iemocap",
    "ljspeech",
    "libritts",
    "vctk",
    "speech_commands",
    "folder",
    "csv",
)


def _csv_corpus(root):
    rows = []
    for index, split in enumerate(("train", "train", "test", "test")):
        audio = testing.write_tone(root / "audio" / f"{index}.wav", 0.3, frequency=200 + 40 * index)
        rows.append(f"audio/{audio.name},{'yes' if index % 2 else 'no'},{split}")
    table = root / "data.csv"
    table.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return table


BUILDERS = {
    "librispeech": lambda root: testing.make_librispeech_tree(root, speakers_per_subset=1),
    "voxceleb1": lambda root: testing.make_voxceleb1_tree(root, num_speakers=2),
    "iemocap": lambda root: testing.make_iemocap_tree(root, sessions=(1,), utterances_per_dialog=2),
    "ljspeech": lambda root: testing.make_ljspeech_tree(root, num_utterances=3),
    "libritts": lambda root: testing.make_libritts_tree(root, speakers_per_subset=1),
    "vctk": lambda root: testing.make_vctk_tree(root),
    "speech_commands": lambda root: testing.make_speech_commands_tree(root, words=("no", "yes")),
    "folder": lambda root: testing.make_folder_tree(root / "classes"),
    "csv": _csv_corpus,
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """``{corpus: source path}``: one small tree per layout, shared (tests copy to change)."""
    return {corpus: build(tmp_path_factory.mktemp(corpus)) for corpus, build in BUILDERS.items()}


@pytest.fixture
def prepared(cli, sources, tmp_path):
    """``prepared(corpus) -> out folder`` after one good preparation."""

    def call(corpus: str):
        out = tmp_path / f"out_{corpus}"
        code, _, stderr = cli("prepare", corpus, sources[corpus], out, "--workers", 1)
        assert code == 0, stderr
        return out

    return call


def _report(out) -> list[dict]:
    """The rows of ``out/skipped.jsonl``."""
    return [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]


def _loop(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)  # a symlink to itself
    return loop


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("bad", ["missing", "symlink-loop", "empty-folder", "a-file"])
def test_bad_source_is_one_line(cli, tmp_path, corpus, bad):
    if bad == "missing":
        src = tmp_path / "no_such_corpus"
    elif bad == "symlink-loop":
        src = _loop(tmp_path)
    elif bad == "empty-folder":
        src = tmp_path / "empty"
        src.mkdir()
    else:
        src = tmp_path / "notes.txt"
        src.write_text("not a corpus\n")
    out = tmp_path / "out"
    code, _, stderr = cli("prepare", corpus, src, out)
    assert_one_line_error(code, stderr, "speechssl prepare: error: ")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("corpus", CORPORA)
@pytest.mark.parametrize("bad", ["out-is-a-file", "out-below-a-file", "disk-full"])
def test_bad_output_is_one_line_and_keeps_earlier_outputs(
    cli, prepared, sources, tmp_path, monkeypatch, corpus, bad
):
    out = prepared(corpus)
    before = snapshot(out)
    if bad == "out-is-a-file":
        target = out / "summary.json"
    elif bad == "out-below-a-file":
        target = out / "summary.json" / "nested"
    else:
        target = out

        def full_disk(source, destination):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", full_disk)
    code, _, stderr = cli("prepare", corpus, sources[corpus], target, "--workers", 1)
    monkeypatch.undo()
    line = assert_one_line_error(code, stderr)
    if bad == "disk-full":
        assert "disk full at " + str(out) in line
    assert snapshot(out) == before  # no manifest half-replaced, no temporary file left


# ---------------------------------------------------------------------------------------
# data that used to be lost or hidden


def test_split_named_like_a_report_is_refused_before_writing(cli, prepared, tmp_path):
    out = prepared("csv")
    before = snapshot(out)
    audio = testing.write_tone(tmp_path / "a.wav")
    table = tmp_path / "data.csv"
    table.write_text(f"path,label,split\n{audio},yes,skipped\n{audio.name},no,train\n")
    code, _, stderr = cli("prepare", "csv", table, out)
    assert_one_line_error(code, stderr, "'skipped'")
    assert snapshot(out) == before


def test_librispeech_subset_named_skipped_is_refused(cli, sources, tmp_path):
    src = tmp_path / "LibriSpeech"
    shutil.copytree(sources["librispeech"], src)
    (src / "dev-clean").rename(src / "skipped")
    code, _, stderr = cli("prepare", "librispeech", src, tmp_path / "out")
    assert_one_line_error(code, stderr, "'skipped'")
    assert not (tmp_path / "out").exists()


def test_librispeech_refuses_a_voxceleb1_folder(cli, sources, tmp_path):
    # VoxCeleb1's wav/<id>/<video>/<n>.wav has LibriSpeech's depth but not its names
    out = tmp_path / "out"
    code, _, stderr = cli("prepare", "librispeech", sources["voxceleb1"], out)
    assert_one_line_error(code, stderr, "librispeech: no subset folder with <speaker>/<chapter>/")
    assert not out.exists()


@pytest.fixture
def unlistable(monkeypatch):
    """``unlistable(path)``: listing that folder fails as it does without read permission
    (the tests run as root, whom chmod does not stop)."""
    real_scandir = os.scandir
    blocked: set[str] = set()

    def scandir(path="."):
        if os.fspath(path) in blocked:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return lambda path: blocked.add(os.fspath(path))


@pytest.mark.parametrize(
    "corpus, folder",
    [
        ("folder", "yes"),
        ("librispeech", "train-clean-100"),
        ("libritts", "dev-clean"),
        ("vctk", "wav48_silence_trimmed/p225"),
    ],
)
def test_unreadable_folder_is_reported_not_dropped(
    cli, sources, tmp_path, unlistable, corpus, folder
):
    src = tmp_path / "src"
    shutil.copytree(sources[corpus], src)
    unlistable(src / folder)
    out = tmp_path / "out"
    code, _, stderr = cli("prepare", corpus, src, out, "--workers", 1)
    assert code == 0, stderr
    skipped = list(_report(out))
    assert {"path": str(src / folder), "reason": "unreadable-folder"} in [
        {"path": row["path"], "reason": row["reason"]} for row in skipped
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"]["unreadable-folder"] == 1


def test_ljspeech_duplicate_ids_keep_one_row_and_are_reported(cli, sources, tmp_path):
    src = tmp_path / "LJSpeech-1.1"
    shutil.copytree(sources["ljspeech"], src)
    metadata = src / "metadata.csv"
    lines = metadata.read_text().splitlines()
    first_id = lines[0].split("|")[0]
    metadata.write_text("\n".join([*lines, f"{first_id}|Other text.|Other text."]) + "\n")
    out = tmp_path / "out"
    assert cli("prepare", "ljspeech", src, out, "--workers", 1)[0] == 0
    ids = [row["id"] for row in read_jsonl(out / "all.jsonl")]
    assert len(ids) == len(set(ids)) == len(lines)
    skipped = list(_report(out))
    assert [row["reason"] for row in skipped] == ["duplicate-id"]


def test_voxceleb1_line_repeated_in_another_split_never_reaches_two_splits(cli, sources, tmp_path):
    src = tmp_path / "VoxCeleb1"
    shutil.copytree(sources["voxceleb1"], src)
    split_file = src / "iden_split.txt"
    lines = split_file.read_text().splitlines()
    code, relative = lines[0].split()
    other = "3" if code != "3" else "1"
    split_file.write_text("\n".join([*lines, lines[0], f"{other} {relative}"]) + "\n")
    out = tmp_path / "out"
    assert cli("prepare", "voxceleb1", src, out, "--workers", 1)[0] == 0
    listed = [
        split
        for split in ("train", "dev", "test")
        for row in read_jsonl(out / f"{split}.jsonl")
        if row["id"] == relative.removesuffix(".wav")
    ]
    assert len(listed) == 1
    reasons = sorted(row["reason"] for row in _report(out))
    assert "conflicting-split" in reasons and "duplicate-line" in reasons


def test_re_preparing_removes_stale_manifests_and_keeps_other_files(cli, sources, tmp_path):
    out = tmp_path / "out"
    assert cli("prepare", "csv", sources["csv"], out)[0] == 0
    assert (out / "test.jsonl").is_file()
    (out / "my_notes.jsonl").write_text('{"mine": true}\n')
    orphan = out / ".train.jsonl.tmp4194304"  # left by a preparation killed mid-write
    orphan.write_text("half a manifest")
    table = tmp_path / "train_only.csv"
    rows = sources["csv"].read_text().splitlines()
    table.write_text("\n".join(row for row in rows if not row.endswith(",test")) + "\n")
    shutil.copytree(sources["csv"].parent / "audio", tmp_path / "audio")
    code, stdout, _ = cli("prepare", "csv", table, out)
    assert code == 0
    assert not (out / "test.jsonl").exists() and (out / "train.jsonl").is_file()
    assert (out / "my_notes.jsonl").read_text() == '{"mine": true}\n'
    assert not orphan.exists()
    assert "removed stale: test.jsonl" in stdout
    assert json.loads((out / "summary.json").read_text())["removed_stale"] == ["test.jsonl"]


def test_symlink_loop_in_a_csv_row_is_a_counted_skip(cli, tmp_path):
    audio = testing.write_tone(tmp_path / "a.wav")
    loop = _loop(tmp_path)
    table = tmp_path / "data.csv"
    table.write_text(f"path,label\n{audio},yes\n{loop},no\n../../{loop.name}/x.wav,no\n")
    out = tmp_path / "out"
    code, _, stderr = cli("prepare", "csv", table, out)
    assert code == 0, stderr
    assert [row["id"] for row in read_jsonl(out / "all.jsonl")] == ["a"]
    reasons = [row["reason"] for row in _report(out)]
    assert len(reasons) == 2 and "unresolvable-path" in reasons
