"""speechssl.data.layouts: the one writer of each corpus layout. Parsing the committed demo
corpus's metadata (written by tools/make_demo_corpus.py and tools/make_real_demo.py
through these writers) and writing it again must give the same bytes, and every audio
path a writer names must be the file the demo holds; fabricated trees round-trip through
the preparers."""

import csv
import io
import re
from pathlib import Path

from speechssl.data.layouts import iemocap, librispeech, libritts, ljspeech, vctk, voxceleb1
from speechssl.data.prepare import prepare
from speechssl.demo import demo_path
from speechssl.testing import make_vctk_tree


def test_voxceleb1_lists_are_rewritten_byte_for_byte(tmp_path):
    corpus = demo_path("voxceleb1")
    split_text = (corpus / "iden_split.txt").read_text()
    entries = [line.split() for line in split_text.splitlines()]
    relatives = [path.removesuffix(".wav") for _, path in entries]
    written = voxceleb1.write_identification_split(
        tmp_path, [(code, name) for (code, _), name in zip(entries, relatives)]
    )
    assert written.read_bytes() == (corpus / "iden_split.txt").read_bytes()
    trials = [line.split() for line in (corpus / "veri_test.txt").read_text().splitlines()]
    written = voxceleb1.write_trials(
        tmp_path,
        [(int(label), a.removesuffix(".wav"), b.removesuffix(".wav")) for label, a, b in trials],
    )
    assert written.read_bytes() == (corpus / "veri_test.txt").read_bytes()
    # the lists name .wav; the demo stores Ogg Opus under the same stem
    for relative in relatives[:50]:
        assert voxceleb1.audio_path(corpus, relative, ".opus").is_file(), relative
    speaker, video, number = relatives[0].split("/")
    assert voxceleb1.utterance(speaker, video, int(number)) == relatives[0]


def test_ljspeech_metadata_is_rewritten_byte_for_byte(tmp_path):
    corpus = demo_path("ljspeech")
    text = (corpus / "metadata.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text), delimiter="|", quoting=csv.QUOTE_NONE))
    assert all(len(row) == 3 for row in rows)
    written = ljspeech.write_metadata(tmp_path, rows)
    assert written.read_bytes() == (corpus / "metadata.csv").read_bytes()
    for row in rows:
        assert ljspeech.audio_path(corpus, row[0], ".ogg").is_file(), row[0]


def test_librispeech_speakers_file_and_audio_paths(tmp_path):
    corpus = demo_path("librispeech")
    lines = (corpus / "SPEAKERS.TXT").read_text().splitlines()
    header = [line for line in lines if line.startswith(";")]
    written = librispeech.write_speakers_file(
        tmp_path, [line for line in lines if not line.startswith(";")], header=header
    )
    assert written.read_bytes() == (corpus / "SPEAKERS.TXT").read_bytes()
    found = sorted(path.relative_to(corpus) for path in corpus.glob("*/*/*/*.opus"))
    assert found
    for relative in found:
        subset, speaker, chapter, name = relative.parts
        number = int(Path(name).stem.split("-")[-1])
        assert librispeech.audio_path(corpus, subset, speaker, chapter, number, ".opus") == (
            corpus / relative
        )
    # the release's column widths
    assert librispeech.speaker_line(103, "F", "train-clean-100", 25.03, "Lisa") == (
        "103  | F | train-clean-100  | 25.03 | Lisa"
    )


_SUMMARY = re.compile(r"^\[(\S+) - (\S+)\]\t(\S+)\t(\S+)\t\[(\S+), (\S+), (\S+)\]$")
_CATEGORICAL = re.compile(r"^(C-\w+):\t(.*);\t\((.*)\)$")
_DIMENSIONAL = re.compile(r"^(A-\w+):\tval (\d); act (\d); dom  (\d);\t\(\)$")


def _parse_turn(lines: list[str]) -> list[str]:
    """One evaluation-file turn parsed into fields and written again by the layout."""
    start, end, utterance, emotion, *vad = _SUMMARY.match(lines[0]).groups()
    categorical, dimensional = [], []
    for line in lines[1:]:
        if match := _CATEGORICAL.match(line):
            evaluator, categories, comment = match.groups()
            categorical.append((evaluator, categories.split("; "), comment))
        else:
            evaluator, *scores = _DIMENSIONAL.match(line).groups()
            dimensional.append((evaluator, [int(score) for score in scores]))
    return iemocap.turn_lines(
        utterance,
        emotion,
        float(start),
        float(end),
        [float(value) for value in vad],
        categorical,
        dimensional,
    )


def test_iemocap_evaluations_are_rewritten_byte_for_byte(tmp_path):
    # the demo's EmoDB set: one dialog per speaker, no transcriptions (EmoDB's German
    # sentences are not in its file names; testing.make_iemocap_tree writes transcriptions)
    corpus = demo_path("iemocap")
    evaluations = sorted(corpus.glob("Session*/dialog/EmoEvaluation/*.txt"))
    assert len(evaluations) == 10
    for path in evaluations:
        session = int(path.parts[-4].removeprefix("Session"))
        dialog = path.stem
        lines = path.read_text().splitlines()
        assert lines[:2] == [iemocap.EVALUATION_HEADER, ""]
        turns, current = [], []
        for line in lines[2:]:
            if line:
                current.append(line)
            else:
                turns.append(_parse_turn(current))
                current = []
        written = iemocap.write_evaluation(tmp_path, session, dialog, turns)
        assert written.relative_to(tmp_path) == path.relative_to(corpus)
        assert written.read_bytes() == path.read_bytes(), path
        for turn in turns:
            utterance = turn[0].split("\t")[1]
            audio = iemocap.audio_path(corpus, session, dialog, utterance)
            assert audio.with_suffix(".opus").is_file()


def test_iemocap_transcription_lines_have_the_release_format(tmp_path):
    # a line of the release's Session1/dialog/transcriptions/Ses01F_impro01.txt
    written = iemocap.write_transcription(
        tmp_path, 1, "Ses01F_impro01", [("Ses01F_impro01_F000", 6.2901, 8.2357, "Excuse me.")]
    )
    assert written.relative_to(tmp_path).as_posix() == (
        "Session1/dialog/transcriptions/Ses01F_impro01.txt"
    )
    assert written.read_text() == "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"


def test_libritts_texts_and_audio_paths(tmp_path):
    corpus = demo_path("libritts")
    wavs = sorted(corpus.glob("*/*/*/*.wav"))
    assert wavs
    for wav in wavs:
        subset, speaker, chapter, _ = wav.relative_to(corpus).parts
        speaker_id, chapter_id, paragraph, sentence = wav.stem.split("_")
        stem = libritts.utterance_id(speaker, chapter, int(paragraph), int(sentence))
        assert (stem, speaker_id, chapter_id) == (wav.stem, speaker, chapter)
        assert libritts.audio_path(corpus, subset, speaker, chapter, stem) == wav
        original = wav.with_name(f"{stem}.original.txt").read_text()
        normalized = wav.with_name(f"{stem}.normalized.txt").read_text()
        written = libritts.write_texts(
            tmp_path, subset, speaker, chapter, stem, original, normalized
        )
        assert [path.read_bytes() for path in written] == [
            wav.with_name(path.name).read_bytes() for path in written
        ]


def test_vctk_fabricated_tree_prepares(tmp_path):
    """VCTK has no demo corpus: its writer is checked through the preparer."""
    root = make_vctk_tree(tmp_path / "src")
    assert root.name == vctk.FOLDER
    summary = prepare("vctk", root, tmp_path / "out")
    # p225, p226 x 2 texts; p315's audio has no text and is skipped
    assert summary["manifests"]["all"]["utterances"] == 4
    assert summary["skipped"] == {"no-transcript": 2}
    assert (root / "txt" / "p225" / "p225_001.txt").read_text().endswith(".\n")
