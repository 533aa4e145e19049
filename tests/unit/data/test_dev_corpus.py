"""The development corpus outside the wheel (``data/``): Mini LibriSpeech with its transcripts,
within its size budget, read by the LibriSpeech preparer, and rebuilt byte for byte.

Audio is only read from headers here, plus a few files decoded; nothing decodes 5 hours.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import soundfile

from speechssl.data.prepare import prepare
from speechssl.data.prepare.common import check_audio

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
DATA = REPOSITORY_ROOT / "data"
CORPUS = DATA / "LibriSpeech"
SUBSET = CORPUS / "train-clean-5"
MIRROR = Path("/work/.mirror")


def _rows(out: Path, manifest: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{manifest}.jsonl").read_text().splitlines()]


def test_dev_corpus_is_present_and_within_budget():
    files = [path for path in DATA.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 60_000_000
    assert max(path.stat().st_size for path in files) < 20_000_000
    assert (DATA / "NOTICE.md").is_file() and (CORPUS / "LICENSE.TXT").is_file()
    assert "Creative Commons Attribution 4.0" in (CORPUS / "LICENSE.TXT").read_text()
    assert len(list(SUBSET.glob("*/*/*.opus"))) == 1519
    assert len(list(SUBSET.glob("*/*/*.trans.txt"))) == 29


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilibrispeech")
    summary = prepare("librispeech", CORPUS, out, verify=False)
    assert not summary["skipped"]
    assert list(summary["manifests"]) == ["train-clean-5"]
    return out


def test_preparer_reads_every_utterance_with_its_transcript(prepared):
    rows = _rows(prepared, "train-clean-5")
    assert len(rows) == 1519 and all(row["text"] for row in rows)
    speakers = {row["speaker"] for row in rows}
    assert len(speakers) == 28
    genders = {row["speaker"]: row["gender"] for row in rows}
    assert sorted(genders.values()).count("F") == 16 and set(genders.values()) == {"F", "M"}
    assert 4.5 <= sum(row["duration"] for row in rows) / 3600 <= 5.5
    # each row's text is its line of the chapter's trans.txt
    for row in rows[::150]:
        audio = Path(row["audio"])
        transcript = audio.parent / f"{audio.parent.parent.name}-{audio.parent.name}.trans.txt"
        assert f"{row['id']} {row['text']}" in transcript.read_text().splitlines()
        check = check_audio(row["audio"])  # fully decoded
        assert not check.reason and check.sample_rate == 16000
        assert abs(check.num_samples / 16000 - row["duration"]) < 0.05
        header = soundfile.info(row["audio"])
        assert (header.format, header.subtype, header.channels) == ("OGG", "OPUS", 1)


def test_speaker_and_chapter_tables_hold_the_corpus_readers(prepared):
    readers = {path.name for path in SUBSET.iterdir()}
    chapters = {path.name for path in SUBSET.glob("*/*")}
    for name, keys in (("SPEAKERS.TXT", readers), ("CHAPTERS.TXT", chapters)):
        lines = [line for line in (CORPUS / name).read_text().splitlines() if line.strip()]
        assert lines[0].startswith(";")
        listed = {line.split("|")[0].strip() for line in lines if not line.startswith(";")}
        assert listed == keys, name


@pytest.mark.skipif(
    not (MIRROR / "zhangrui0712+Voice-Age" / "repo").is_dir(),
    reason="the source repository is not fetched here",
)
def test_a_rebuilt_utterance_is_byte_identical(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_real_demo", REPOSITORY_ROOT / "tools" / "make_real_demo.py"
    )
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder  # its dataclasses look their module up
    spec.loader.exec_module(builder)
    repositories = builder.Repositories(MIRROR)
    relative = "train-clean-5/332/128985/332-128985-0000"
    wav, rate = repositories.audio("minilibrispeech", f"LibriSpeech/{relative}.flac")
    builder.write_ogg(tmp_path, f"{relative}.opus", wav, rate, builder.DEV_OPUS_LEVEL)
    assert (tmp_path / f"{relative}.opus").read_bytes() == (
        CORPUS / f"{relative}.opus"
    ).read_bytes()
