"""Bad audio, transcripts, split/trial/metadata lines and layouts: each ends in
``skipped.jsonl`` with its reason, or as one error line from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechssl import cli, testing
from speechssl.data.prepare import PREPARERS, prepare


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _reasons(out: Path) -> dict[str, str]:
    """``path -> reason`` of every skipped row."""
    return {row["path"]: row["reason"] for row in _jsonl(out / "skipped.jsonl")}


WAV_KINDS = [
    "missing",
    "empty",
    "unreadable",
    "truncated",
    "non-finite",
    "zero-length",
    "too-short",
]
HEADER_KINDS = {"missing", "empty", "unreadable", "zero-length", "too-short"}


@pytest.fixture(scope="module")
def bad_iemocap(tmp_path_factory):
    """An IEMOCAP tree whose kept-label WAVs are replaced by one bad file of each kind."""
    root = tmp_path_factory.mktemp("iemocap")
    corpus = testing.make_iemocap_tree(root, sessions=(1, 2))
    planted = {}
    kept = [p for p in sorted(corpus.glob("Session*/sentences/wav/*/*.wav"))]
    # turns 0-4 of each dialog-pair cycle carry kept labels (neu hap ang sad exc)
    kept = [p for i, p in enumerate(sorted(kept, key=_turn_order)) if i % 8 < 5]
    for path, kind in zip(kept, WAV_KINDS):
        if kind == "missing":
            path.unlink()
            planted[str(path)] = "missing"
        else:
            planted[str(path)] = testing.plant_bad_audio(path, kind)
    return corpus, planted, len(kept)


def _turn_order(path: Path) -> tuple:
    # the order in which make_iemocap_tree hands out labels: session, dialog, turn number
    name = path.stem
    gender, number = name[-4], int(name[-3:])
    return (path.parts[-5], "script" in name, 2 * number + (gender == "M"))


def test_every_bad_wav_is_skipped_with_its_reason(bad_iemocap, tmp_path):
    corpus, planted, num_kept = bad_iemocap
    summary = prepare("iemocap", corpus, tmp_path)
    reasons = _reasons(tmp_path)
    assert {path: reasons.get(path) for path in planted} == planted
    assert summary["manifests"]["all"]["utterances"] == num_kept - len(planted)
    for kind in WAV_KINDS:
        assert summary["skipped"][kind] == 1
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_no_verify_reads_headers_only(bad_iemocap, tmp_path):
    corpus, planted, num_kept = bad_iemocap
    summary = prepare("iemocap", corpus, tmp_path, verify=False)
    reasons = _reasons(tmp_path)
    header_level = {path: kind for path, kind in planted.items() if kind in HEADER_KINDS}
    assert {path: reasons.get(path) for path in header_level} == header_level
    # NaN samples only show when decoded
    assert "non-finite" not in summary["skipped"]
    assert summary["manifests"]["all"]["utterances"] == num_kept - len(planted) + 1
    assert summary["verified"] is False


def test_bad_flac_and_transcripts_in_librispeech(tmp_path):
    corpus = testing.make_librispeech_tree(
        tmp_path, subsets=("dev-clean",), utterances_per_chapter=4
    )
    chapter = corpus / "dev-clean" / "19" / "198"
    expected = {}
    for number, kind in zip((1, 2, 3), ("truncated", "too-short", "empty")):
        path = chapter / f"19-198-{number:04d}.flac"
        expected[str(path)] = testing.plant_bad_audio(path, kind)
    (chapter / "19-198-0004.flac").unlink()
    expected[str(chapter / "19-198-0004.flac")] = "missing"
    # a flac the transcript does not list, and a malformed transcript line
    testing.write_tone(chapter / "19-198-0005.flac")
    expected[str(chapter / "19-198-0005.flac")] = "no-transcript"
    transcript = chapter / "19-198.trans.txt"
    transcript.write_text(transcript.read_text() + "this-is-not-an-id HELLO\n")
    expected[str(transcript)] = "malformed-line"
    # a chapter whose transcript is not UTF-8
    other = corpus / "dev-clean" / "26" / "199"
    (other / "26-199.trans.txt").write_bytes(b"26-199-0001 CAF\xe9\n")
    for flac in other.glob("*.flac"):
        expected[str(flac)] = "unreadable-transcript"
    # no file kept: one line, after skipped.jsonl and summary.json say why
    with pytest.raises(ValueError, match="librispeech: no file kept"):
        prepare("librispeech", corpus, tmp_path / "out")
    assert _reasons(tmp_path / "out") == expected
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["manifests"]["dev-clean"]["utterances"] == 0


def test_voxceleb1_malformed_lines_and_missing_trial_audio(tmp_path):
    corpus = testing.make_voxceleb1_tree(tmp_path)
    split_lines = (corpus / "iden_split.txt").read_text().splitlines()
    trial_lines = (corpus / "veri_test.txt").read_text().splitlines()
    (corpus / "iden_split.txt").write_text(
        "\n".join(
            split_lines + ["4 id10001/abcdefghijk/00001.wav", "1 not/a/path.wav", "1 a b", ""]
        )
    )
    (corpus / "veri_test.txt").write_text("\n".join(trial_lines + ["2 a.wav b.wav"]) + "\n")
    # the enrolment file of the first trial disappears
    missing = trial_lines[0].split()[1]
    (corpus / "wav" / missing).unlink()
    summary = prepare("voxceleb1", corpus, tmp_path / "out")
    skipped = _jsonl(tmp_path / "out" / "skipped.jsonl")
    malformed = [row for row in skipped if row["reason"] == "malformed-line"]
    assert [Path(row["path"]).name for row in malformed] == ["iden_split.txt"] * 3 + [
        "veri_test.txt"
    ]
    assert summary["skipped"]["missing"] == 1  # reported once though listed in two manifests
    uses_missing = sum(missing in line for line in trial_lines)
    assert summary["trials"] == {
        "written": len(trial_lines) - uses_missing,
        "skipped": uses_missing,
    }
    assert summary["skipped"]["trial-audio-unusable"] == uses_missing
    written = (tmp_path / "out" / "trials.txt").read_text()
    assert missing[: -len(".wav")] not in written


def test_iemocap_malformed_summary_line(tmp_path):
    corpus = testing.make_iemocap_tree(tmp_path, sessions=(1,), utterances_per_dialog=2)
    evaluation = corpus / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    text = evaluation.read_text().replace("\tSes01F_impro01_F000\t", " Ses01F_impro01_F000 ")
    evaluation.write_text(text)
    summary = prepare("iemocap", corpus, tmp_path / "out", verify=False)
    # the 2 x 2 turns carry neu hap ang sad: nothing dropped, one line unreadable
    assert summary["skipped"] == {"malformed-line": 1}
    assert summary["manifests"]["all"]["utterances"] == 3


def test_ljspeech_malformed_metadata_line(tmp_path):
    corpus = testing.make_ljspeech_tree(tmp_path, num_utterances=2)
    metadata = corpus / "metadata.csv"
    metadata.write_text(metadata.read_text() + "LJ001-0003|only raw text\n")
    summary = prepare("ljspeech", corpus, tmp_path / "out", verify=False)
    assert summary["skipped"] == {"malformed-line": 1}
    assert summary["manifests"]["all"]["utterances"] == 2


def test_libritts_missing_normalized_text(tmp_path):
    corpus = testing.make_libritts_tree(tmp_path, subsets=("dev-clean",), speakers_per_subset=1)
    text = next(corpus.glob("dev-clean/*/*/*.normalized.txt"))
    text.unlink()
    summary = prepare("libritts", corpus, tmp_path / "out", verify=False)
    assert summary["skipped"] == {"no-transcript": 1}
    assert summary["manifests"]["dev-clean"]["utterances"] == 1


def test_csv_bad_rows(tmp_path):
    testing.write_tone(tmp_path / "a.wav")
    testing.write_tone(tmp_path / "b.wav")
    (tmp_path / "t.csv").write_text(
        "path,label\na.wav,yes\na.wav,no\nb.wav,maybe\nb.wav,yes,extra\n,yes\nc.wav,no\n"
    )
    summary = prepare("csv", tmp_path / "t.csv", tmp_path / "out", labels=["yes", "no"])
    assert summary["skipped"] == {
        "duplicate-id": 1,
        "label-not-in-set": 1,
        "malformed-line": 2,
        "missing": 1,
    }
    assert summary["manifests"]["all"]["labels"] == {"yes": 1}


# ---------------------------------------------------------------------------------------
# layouts and the command line


@pytest.mark.parametrize("corpus", sorted(PREPARERS))
def test_wrong_layout_is_one_error_line(corpus, tmp_path, capsys):
    (tmp_path / "src" / "unrelated").mkdir(parents=True)
    src = tmp_path / "src" / ("notes.csv" if corpus == "csv" else "")
    if corpus == "csv":
        src.write_text("file,category\nx.wav,a\n")
    code = cli.main(["prepare", corpus, str(src), str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code != 0
    assert len(error.strip().splitlines()) == 1, error
    assert error.startswith(f"speechssl prepare: error: {corpus}")
    assert "Traceback" not in error


def test_voxceleb1_layout_message_names_the_expected_layout(tmp_path, capsys):
    assert cli.main(["prepare", "voxceleb1", str(tmp_path), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        f"speechssl prepare: error: voxceleb1: no wav/ folder under {tmp_path.resolve()} "
        "(expected VoxCeleb1/wav/idXXXXX/<video>/NNNNN.wav)"
    )


def test_labels_option_rejected_for_fixed_corpora(tmp_path, capsys):
    corpus = testing.make_ljspeech_tree(tmp_path, num_utterances=1)
    code = cli.main(["prepare", "ljspeech", str(corpus), str(tmp_path / "o"), "--labels", "a,b"])
    assert code == 1 and "--labels" in capsys.readouterr().err


def test_python_dash_m_cli_prepare(tmp_path):
    corpus = testing.make_ljspeech_tree(tmp_path, num_utterances=2)
    environment = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechssl.cli",
            "prepare",
            "ljspeech",
            str(tmp_path),
            str(tmp_path / "out"),
            "--no-verify",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "all.jsonl: 2 utterances" in result.stdout
    assert len(_jsonl(tmp_path / "out" / "all.jsonl")) == 2
    assert corpus.name in result.stdout
