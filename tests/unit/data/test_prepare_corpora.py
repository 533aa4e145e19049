"""Each corpus preparer on a fixture tree in the real layout, cross-checked against
torchaudio's own dataset parsers where they can read the same tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torchaudio

from speechssl import testing
from speechssl.data.manifest import read_jsonl
from speechssl.data.prepare import PREPARERS, prepare


def _rows(out: Path, name: str) -> list[dict]:
    return list(read_jsonl(out / f"{name}.jsonl"))


def _skipped(out: Path) -> list[dict]:
    return list(read_jsonl_lines(out / "skipped.jsonl"))


def read_jsonl_lines(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_registry_lists_every_corpus():
    assert set(PREPARERS) == {
        "librispeech",
        "voxceleb1",
        "iemocap",
        "ljspeech",
        "libritts",
        "vctk",
        "speech_commands",
        "folder",
        "csv",
        "lhotse",
    }


def test_librispeech_matches_torchaudio(tmp_path):
    corpus = testing.make_librispeech_tree(tmp_path / "src")
    # the parent of the corpus root is accepted as well as the root itself
    summary = prepare("librispeech", tmp_path / "src", tmp_path / "out")
    assert sorted(summary["manifests"]) == ["dev-clean", "train-clean-100"]
    for subset in ("train-clean-100", "dev-clean"):
        rows = {row["id"]: row for row in _rows(tmp_path / "out", subset)}
        reference = torchaudio.datasets.LIBRISPEECH(tmp_path / "src", url=subset)
        assert len(rows) == len(reference) == 4
        for index in range(len(reference)):
            path, rate, transcript, speaker, chapter, utterance = reference.get_metadata(index)
            row = rows[f"{speaker}-{chapter}-{utterance:04d}"]
            assert row["text"] == transcript
            assert row["speaker"] == str(speaker)
            assert row["sample_rate"] == rate
            assert row["audio"] == str(corpus / path)
            assert row["duration"] == pytest.approx(0.3)
    # gender comes from SPEAKERS.TXT, whose "|CBW|Simon" name must not break the parse
    genders = {row["speaker"]: row["gender"] for row in _rows(tmp_path / "out", "train-clean-100")}
    assert genders == {"19": "F", "26": "M"}
    assert summary["manifests"]["dev-clean"]["speakers"] == 2
    assert summary["skipped"] == {}


def test_voxceleb1_matches_torchaudio(tmp_path):
    corpus = testing.make_voxceleb1_tree(tmp_path)
    out = tmp_path / "out"
    summary = prepare("voxceleb1", corpus, out)
    for subset in ("train", "dev", "test"):
        reference = torchaudio.datasets.VoxCeleb1Identification(corpus, subset=subset)
        expected = set()
        for index in range(len(reference)):
            path, _, speaker, _ = reference.get_metadata(index)
            # torchaudio's speaker is int("id10001"[3:]) == 1
            expected.add((path[: -len(".wav")], f"id1{speaker:04d}"))
        rows = _rows(out, subset)
        assert {(row["id"], row["speaker"]) for row in rows} == expected
        assert all(row["split"] == subset for row in rows)
    # 3 speakers x 4 utterances split 1, 1, 2, 3; id10270 is only in the trials
    assert [summary["manifests"][s]["utterances"] for s in ("train", "dev", "test")] == [6, 3, 3]
    verification = torchaudio.datasets.VoxCeleb1Verification(corpus)
    expected_trials = []
    for index in range(len(verification)):
        _, _, _, label, enroll, test = verification.get_metadata(index)
        expected_trials.append((str(label), enroll, test))
    trials = [line.split() for line in (out / "trials.txt").read_text().splitlines()]
    # torchaudio joins speaker-video-utterance with "-"; our ids keep the path's "/"
    assert [
        (label, e.replace("/", "-"), t.replace("/", "-")) for label, e, t in trials
    ] == expected_trials
    used = {utt for _, enroll, test in trials for utt in (enroll, test)}
    assert {row["id"] for row in _rows(out, "verification")} == used
    assert any(utt.startswith("id10270/") for utt in used)
    assert summary["trials"] == {"written": len(expected_trials), "skipped": 0}
    # gender from vox1_meta.csv: speakers alternate f, m
    genders = {row["speaker"]: row["gender"] for row in _rows(out, "verification")}
    assert genders == {"id10001": "F", "id10002": "M", "id10003": "F", "id10270": "M"}


def test_iemocap_matches_torchaudio(tmp_path):
    # torchaudio expects the folder to be named IEMOCAP/
    testing.make_iemocap_tree(tmp_path, folder_name="IEMOCAP")
    out = tmp_path / "out"
    summary = prepare("iemocap", tmp_path, out)
    reference = torchaudio.datasets.IEMOCAP(tmp_path)
    merged = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
    expected = {}
    for index in range(len(reference)):
        path, _, stem, label, _ = reference.get_metadata(index)
        if label in merged:  # torchaudio also keeps fru
            expected[stem] = (merged[label], str(tmp_path / "IEMOCAP" / path))
    rows = _rows(out, "all")
    assert {row["id"]: (row["label"], row["audio"]) for row in rows} == expected
    by_id = {row["id"]: row for row in rows}
    male_turn = by_id["Ses01F_impro01_M000"]
    assert (male_turn["speaker"], male_turn["gender"], male_turn["session"]) == ("Ses01M", "M", 1)
    assert male_turn["dialog_type"] == "impro"
    assert by_id["Ses02M_script01_1_F000"]["speaker"] == "Ses02F"
    assert by_id["Ses02M_script01_1_F000"]["dialog_type"] == "script"
    # 2 sessions x 8 turns: labels cycle neu hap ang sad exc fru xxx sur
    assert summary["manifests"]["all"]["labels"] == {"ang": 2, "hap": 4, "neu": 2, "sad": 2}
    assert summary["dropped_labels"] == {"fru": 2, "sur": 2, "xxx": 2}
    assert summary["manifests"]["all"]["speakers"] == 4
    dropped = [row for row in _skipped(out) if row["reason"] == "label-not-in-set"]
    assert sorted(row["detail"] for row in dropped) == ["fru", "fru", "sur", "sur", "xxx", "xxx"]


def test_iemocap_accepts_release_folder_name(tmp_path):
    corpus = testing.make_iemocap_tree(tmp_path, sessions=(3,), utterances_per_dialog=2)
    for src in (tmp_path, corpus):
        summary = prepare("iemocap", src, tmp_path / "out", verify=False)
        assert summary["manifests"]["all"]["utterances"] == 4
    assert {row["session"] for row in _rows(tmp_path / "out", "all")} == {3}


def test_ljspeech_keeps_quotes_and_normalized_text(tmp_path):
    corpus = testing.make_ljspeech_tree(tmp_path)
    summary = prepare("ljspeech", corpus, tmp_path / "out")
    rows = {row["id"]: row for row in _rows(tmp_path / "out", "all")}
    assert rows["LJ001-0002"]["text"] == 'He said "the first of them" was fine;'
    assert rows["LJ001-0004"]["text"] == "the ''Times'' printed it"
    assert rows["LJ001-0003"]["text"].startswith("in eighteen thirteen")
    assert {row["sample_rate"] for row in rows.values()} == {22050}
    assert summary["manifests"]["all"] | {"hours": 0} == {
        "utterances": 4,
        "hours": 0,
        "speakers": 1,
    }


def test_libritts_reads_normalized_text(tmp_path):
    corpus = testing.make_libritts_tree(tmp_path)
    summary = prepare("libritts", tmp_path, tmp_path / "out")
    assert sorted(summary["manifests"]) == ["dev-clean", "train-clean-100"]
    for row in _rows(tmp_path / "out", "train-clean-100"):
        audio = Path(row["audio"])
        assert row["text"] == audio.with_name(f"{row['id']}.normalized.txt").read_text()
        assert (row["speaker"], row["chapter"]) == (audio.parent.parent.name, audio.parent.name)
        assert row["sample_rate"] == 24000
    assert str(corpus) == summary["source"]


def test_vctk_uses_mic1_and_skips_missing_text(tmp_path):
    corpus = testing.make_vctk_tree(tmp_path)
    summary = prepare("vctk", corpus, tmp_path / "out")
    rows = _rows(tmp_path / "out", "all")
    reference = torchaudio.datasets.VCTK_092(tmp_path, mic_id="mic1")
    # torchaudio lists (speaker, utterance) from txt/ without loading audio
    expected = {f"{speaker}_{utterance}" for speaker, utterance in reference._sample_ids}
    assert {row["id"] for row in rows} == expected
    assert all(row["audio"].endswith("_mic1.flac") for row in rows)
    assert {row["gender"] for row in rows if row["speaker"] == "p226"} == {"M"}
    assert summary["skipped"] == {"no-transcript": 2}
    assert all("p315" in row["path"] for row in _skipped(tmp_path / "out"))


def test_folder_labels_from_subfolders(tmp_path):
    src = testing.make_folder_tree(tmp_path / "src", labels=("angry", "calm"), files_per_label=2)
    testing.write_tone(src / "calm" / "nested" / "x.flac")
    testing.write_tone(src / "stray.wav")
    (src / "calm" / "notes.txt").write_text("not audio")
    summary = prepare("folder", src, tmp_path / "out")
    assert summary["manifests"]["all"]["labels"] == {"angry": 2, "calm": 3}
    assert "calm/nested/x" in {row["id"] for row in _rows(tmp_path / "out", "all")}
    assert summary["skipped"] == {"not-in-class-folder": 1}
    # a label set restricts the classes
    summary = prepare("folder", src, tmp_path / "out2", labels=["calm"])
    assert summary["manifests"]["all"]["labels"] == {"calm": 3}
    assert summary["skipped"]["label-not-in-set"] == 2


def test_csv_splits_and_relative_paths(tmp_path):
    for name in ("a", "b", "c"):
        testing.write_tone(tmp_path / "audio" / f"{name}.wav")
    absolute = testing.write_tone(tmp_path / "elsewhere" / "d.wav")
    table = tmp_path / "meta" / "data.csv"
    table.parent.mkdir()
    table.write_text(
        "path,label,speaker,split\n"
        "../audio/a.wav,yes,s1,train\n"
        '"../audio/b.wav",no,s2,train\n'
        "../audio/c.wav,yes,s1,test\n"
        f"{absolute},no,s3,test\n"
    )
    summary = prepare("csv", table, tmp_path / "out")
    assert sorted(summary["manifests"]) == ["test", "train"]
    train = _rows(tmp_path / "out", "train")
    assert [row["audio"] for row in train] == [str(tmp_path / "audio" / f"{n}.wav") for n in "ab"]
    assert train[0]["speaker"] == "s1" and train[0]["split"] == "train"
    assert summary["manifests"]["test"]["labels"] == {"no": 1, "yes": 1}


def test_csv_without_split_column_writes_all(tmp_path):
    testing.write_tone(tmp_path / "one.wav")
    (tmp_path / "t.csv").write_text('path,text\none.wav,"hello, world"\n')
    summary = prepare("csv", tmp_path / "t.csv", tmp_path / "out")
    assert list(summary["manifests"]) == ["all"]
    assert _rows(tmp_path / "out", "all")[0]["text"] == "hello, world"
