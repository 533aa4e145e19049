"""The Speech Commands preparer: a fabricated release (cross-checked against torchaudio's
parser), the lists' oddities, and the embedded demo's spoken digits (FSDD), whose splits
hold whole speakers."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile
import torchaudio

from speechssl import testing
from speechssl.data.layouts import speech_commands
from speechssl.data.prepare import prepare
from speechssl.demo import demo_path


def _rows(out: Path, manifest: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{manifest}.jsonl").read_text().splitlines()]


def _split_speakers(out: Path) -> dict[str, set[str]]:
    return {
        split: {row["speaker"] for row in _rows(out, split)} for split in ("train", "dev", "test")
    }


def test_release_layout_matches_torchaudio(tmp_path):
    # torchaudio reads <root>/SpeechCommands/speech_commands_v0.02, as the archive unpacks
    corpus = testing.make_speech_commands_tree(tmp_path / "fabricated")
    release = tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    release.parent.mkdir()
    shutil.move(corpus, release)
    summary = prepare("speech_commands", tmp_path, tmp_path / "out")
    assert summary["source"] == str(release) and not summary["skipped"]
    for split, subset in (("train", "training"), ("dev", "validation"), ("test", "testing")):
        dataset = torchaudio.datasets.SPEECHCOMMANDS(tmp_path, subset=subset)
        expected = sorted(
            (label, speaker, number)
            for _, label, speaker, number in (
                dataset.get_metadata(n)[1:] for n in range(len(dataset))
            )
        )
        rows = _rows(tmp_path / "out", split)
        found = sorted(
            (row["label"], row["speaker"], int(row["id"].rsplit("_", 1)[1])) for row in rows
        )
        assert found == expected and len(rows) > 0
        assert all(row["split"] == split for row in rows)
    speakers = _split_speakers(tmp_path / "out")
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"])
    # the noise recordings are no utterances
    assert speech_commands.BACKGROUND_NOISE not in json.dumps(summary)


def test_compressed_clips_conflicting_and_missing_list_entries(tmp_path):
    corpus = testing.make_speech_commands_tree(tmp_path, words=("no", "yes"))
    for path in corpus.glob("*/*.wav"):
        if path.parent.name != speech_commands.BACKGROUND_NOISE:
            wav, rate = soundfile.read(path, dtype="float32")
            soundfile.write(path.with_suffix(".opus"), wav, rate, format="OGG", subtype="OPUS")
            path.unlink()
    testing_list = corpus / speech_commands.LISTS["testing"]
    validation = (corpus / speech_commands.LISTS["validation"]).read_text().splitlines()
    # one validation clip listed for testing too, one listed clip absent, a stray line
    extra = [validation[0], "no/ffffffff_nohash_0.wav", "not a clip"]
    testing_list.write_text(testing_list.read_text() + "\n".join(extra) + "\n")
    (corpus / "yes" / "notes_0.opus").write_bytes(b"")
    summary = prepare("speech_commands", corpus, tmp_path / "out")
    reasons = Counter(row["reason"] for row in _rows(tmp_path / "out", "skipped"))
    assert reasons == {
        "conflicting-split": 1,
        "missing": 1,
        "malformed-line": 1,
        "unexpected-name": 1,
    }
    conflicting = validation[0].removesuffix(".wav")
    ids = {row["id"] for split in summary["manifests"] for row in _rows(tmp_path / "out", split)}
    assert conflicting not in ids
    assert {Path(row["audio"]).suffix for row in _rows(tmp_path / "out", "train")} == {".opus"}


def test_layout_refused_in_one_line(tmp_path):
    testing.make_librispeech_tree(tmp_path)
    with pytest.raises(ValueError, match=r"^speech_commands: no <word>/<speaker>_nohash_<k>"):
        prepare("speech_commands", tmp_path, tmp_path / "out")


def test_embedded_demo_holds_fsdd_digits_split_by_speaker(tmp_path):
    summary = prepare("speech_commands", demo_path("speech_commands"), tmp_path, verify=False)
    assert not summary["skipped"]
    words = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    speakers = _split_speakers(tmp_path)
    assert [len(speakers[split]) for split in ("train", "dev", "test")] == [4, 1, 1]
    assert len(set.union(*speakers.values())) == 6
    for split, per_word in (("train", 200), ("dev", 50), ("test", 50)):
        manifest = summary["manifests"][split]
        assert manifest["labels"] == {word: per_word for word in words}, split
    # real 16 kHz Opus clips of spoken digits (FSDD's are 0.14-2.3 s)
    for row in _rows(tmp_path, "test")[::50]:
        header = soundfile.info(row["audio"])
        assert (header.samplerate, header.format, header.subtype) == (16000, "OGG", "OPUS")
        assert 0.1 <= header.duration <= 2.5
