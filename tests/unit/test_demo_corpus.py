"""The committed demo corpus: real layouts, real sample rates, size budget, sources, learnable
emotions.

LibriSpeech/, VoxCeleb1/ and LJSpeech-1.1/ hold real speech stored as Ogg (Opus/Vorbis), read
by our preparers; torchaudio's own parsers check the metadata files and the WAV corpora.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torchaudio.datasets
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from speechssl.data.prepare import prepare
from speechssl.data.prepare.common import resolve_audio
from speechssl.demo import CORPUS_DIRECTORIES, demo_path, demo_root

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

FOUR_CLASSES = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
SUMMARY_LINE = re.compile(
    r"^\[(\d+\.\d{4}) - (\d+\.\d{4})\]\t(Ses0[1-5][FM]_\w+_[FM]\d{3})\t(\w{3})\t"
    r"\[(\d\.\d{4}), (\d\.\d{4}), (\d\.\d{4})\]$"
)
EVALUATOR_LINE = re.compile(r"^[CA]-[EF]\d:\t.*;\t\(.*\)$")


def parse_emo_evaluation(path: Path) -> list[tuple[str, str, float, float]]:
    """``(utterance, label, start, end)`` per turn; asserts the IEMOCAP file format."""
    lines = path.read_text().split("\n")
    assert lines[0].startswith("%"), f"{path.name}: missing % header"
    turns = []
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith("["):
            match = SUMMARY_LINE.match(line)
            assert match, f"{path.name}:{number}: bad summary line {line!r}"
            assert lines[number - 2] == "", f"{path.name}:{number}: no blank line before turn"
            start, end = float(match.group(1)), float(match.group(2))
            assert end > start
            turns.append((match.group(3), match.group(4), start, end))
        elif line:
            assert EVALUATOR_LINE.match(line), f"{path.name}:{number}: bad evaluator line {line!r}"
    return turns


@pytest.fixture(scope="module")
def iemocap_turns() -> list[dict]:
    """Every labelled IEMOCAP turn with its session, speaker and wav path."""
    root = demo_path("iemocap")
    rows = []
    for session in range(1, 6):
        for label_file in sorted((root / f"Session{session}/dialog/EmoEvaluation").glob("*.txt")):
            dialog = label_file.stem
            for utterance, label, start, end in parse_emo_evaluation(label_file):
                assert utterance.startswith(dialog + "_")
                rows.append(
                    {
                        "session": session,
                        # speaker = session + the gender letter before the turn number
                        "speaker": f"Ses{session:02d}{utterance.rsplit('_', 1)[1][0]}",
                        "label": label,
                        "duration": end - start,
                        "wav": root / f"Session{session}/sentences/wav/{dialog}/{utterance}.opus",
                    }
                )
    return rows


def test_demo_path_maps_every_corpus_and_rejects_unknown_names():
    assert demo_root().name == "demo_data"
    for name, folder in CORPUS_DIRECTORIES.items():
        assert demo_path(name) == demo_root() / folder
        assert demo_path(name).is_dir()
    with pytest.raises(ValueError, match="unknown demo corpus 'timit'"):
        demo_path("timit")


def test_total_size_fits_the_budget():
    files = [path for path in demo_root().rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 40_000_000
    assert not [path for path in files if path.name.startswith(".") or path.suffix == ".pyc"]


@pytest.mark.parametrize(
    "corpus, pattern, sample_rate, container, subtype, seconds",
    [
        ("librispeech", "*/*/*/*.opus", 16000, "OGG", "OPUS", (1.0, 20.0)),
        ("iemocap", "Session*/sentences/wav/*/*.opus", 16000, "OGG", "OPUS", (1.0, 9.0)),
        ("voxceleb1", "wav/id*/*/*.opus", 16000, "OGG", "OPUS", (1.5, 5.0)),
        ("ljspeech", "wavs/*.ogg", 22050, "OGG", "VORBIS", (1.0, 11.0)),
        ("libritts", "train-clean-100/*/*/*.wav", 24000, "WAV", "PCM_16", (0.4, 3.0)),
        ("speech_commands", "*/*.opus", 16000, "OGG", "OPUS", (0.1, 2.5)),
    ],
)
def test_audio_has_the_real_corpus_format(
    corpus, pattern, sample_rate, container, subtype, seconds
):
    paths = sorted(demo_path(corpus).glob(pattern))
    assert len(paths) >= 30
    for path in paths:
        header = soundfile.info(path)
        assert (header.samplerate, header.channels, header.format, header.subtype) == (
            sample_rate,
            1,
            container,
            subtype,
        ), path
        assert seconds[0] <= header.duration <= seconds[1], path


def test_notice_lists_every_source_folder_with_its_commit():
    notice = (demo_root() / "NOTICE.md").read_text()
    sections = {block.split("\n", 1)[0].strip(): block for block in notice.split("\n## ")[1:]}
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in demo_root().iterdir())
    assert sorted(sections) == sorted(e for e in entries if e != "NOTICE.md")
    real = (
        "LibriSpeech/",
        "VoxCeleb1/",
        "LJSpeech-1.1/",
        "IEMOCAP_full_release/",
        "SpeechCommands/",
    )
    for corpus in real:
        assert re.search(r"`[\w.-]+/[\w.-]+` at `[0-9a-f]{40}`", sections[corpus]), corpus
        assert "Licence" in sections[corpus]
    assert sections["LibriTTS/"].startswith("LibriTTS/\n\nSynthetic")
    # every repository and commit the builder reads is credited, here or in the
    # development corpus's notice (data/NOTICE.md)
    notice += (REPOSITORY_ROOT / "data" / "NOTICE.md").read_text()
    builder = (REPOSITORY_ROOT / "tools" / "make_real_demo.py").read_text()
    sources = re.findall(r'Source\(\s*"([\w.-]+/[\w.-]+)",\s*"([0-9a-f]{40})"', builder)
    assert len(sources) >= 4
    for repository, commit in sources:
        assert f"`{repository}` at `{commit}`" in notice, repository


def test_librispeech_is_unlabelled_real_speech_from_many_readers(tmp_path):
    root = demo_path("librispeech")
    summary = prepare("librispeech", root, tmp_path)
    assert not summary["skipped"]
    minutes, readers = {}, {}
    for subset in ("train-clean-100", "dev-clean"):
        rows = [
            json.loads(line) for line in (tmp_path / f"{subset}.jsonl").read_text().splitlines()
        ]
        assert all("text" not in row for row in rows)
        minutes[subset] = sum(row["duration"] for row in rows) / 60
        readers[subset] = {row["speaker"] for row in rows}
    # the pre-training target: at least 30 minutes, many readers rather than long ones
    assert minutes["train-clean-100"] >= 30 and len(readers["train-clean-100"]) >= 100
    assert len(readers["dev-clean"]) >= 8 and not readers["train-clean-100"] & readers["dev-clean"]
    for path in root.glob("*/*/*/*.opus"):
        speaker, chapter = path.parent.parent.name, path.parent.name
        assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}\.opus", path.name)
    speakers = {}
    for line in (root / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";"):
            continue
        speaker_id, gender, _subset, minutes_read, name = (f.strip() for f in line.split("|", 4))
        speakers[speaker_id] = gender
        assert gender in {"F", "M"} and float(minutes_read) > 0 and name
    assert set(speakers) == readers["train-clean-100"] | readers["dev-clean"]
    assert set(speakers.values()) == {"F", "M"}
    # no reader of the speaker set is in the pre-training audio
    voxceleb_readers = {str(int(p.name[3:])) for p in demo_path("voxceleb1").glob("wav/id*")}
    assert not voxceleb_readers & set(speakers)


def test_iemocap_sessions_have_both_genders_and_all_four_classes(iemocap_turns):
    root = demo_path("iemocap")
    labelled = {row["wav"] for row in iemocap_turns}
    on_disk = set(root.glob("Session*/sentences/wav/*/*.opus"))
    assert labelled == on_disk, "every clip has exactly one EmoEvaluation turn"
    assert len(labelled) == 339  # EmoDB's N/F/W/T takes
    # every utterance is traced to its EmoDB file, whose emotion letter gives the label
    sources = (root / "EMODB_SOURCES.tsv").read_text().splitlines()[1:]
    letters = {"N": "neu", "F": "hap", "W": "ang", "T": "sad"}
    by_utterance = {line.split("\t")[0]: letters[line.split("\t")[4]] for line in sources}
    assert by_utterance == {row["wav"].stem: row["label"] for row in iemocap_turns}
    for session in range(1, 6):
        rows = [r for r in iemocap_turns if r["session"] == session and r["label"] in FOUR_CLASSES]
        for gender in "FM":
            classes = Counter(FOUR_CLASSES[r["label"]] for r in rows if r["speaker"][-1] == gender)
            assert set(classes) == {"neu", "hap", "ang", "sad"}, (session, gender, classes)
            assert min(classes.values()) >= 2  # EmoDB: one actor has only 2 happy takes
    for row in iemocap_turns[:20]:
        assert abs(soundfile.info(row["wav"]).duration - row["duration"]) < 1e-3


def test_iemocap_parses_with_torchaudio(tmp_path):
    # torchaudio expects the folder to be called IEMOCAP (the release unpacks to
    # IEMOCAP_full_release) and .wav audio: a copy with the metadata and every clip
    # decoded to WAV
    source, copy = demo_path("iemocap"), tmp_path / "IEMOCAP"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.opus"))
    for clip in source.glob("Session*/sentences/wav/*/*.opus"):
        wav, rate = soundfile.read(clip, dtype="int16")
        soundfile.write(copy / clip.relative_to(source).with_suffix(".wav"), wav, rate)
    dataset = torchaudio.datasets.IEMOCAP(tmp_path)
    labels = Counter(dataset.get_metadata(n)[3] for n in range(len(dataset)))
    assert labels == {"ang": 127, "neu": 79, "hap": 71, "sad": 62}


def test_voxceleb_iden_split_covers_every_clip_with_real_sized_splits():
    root = demo_path("voxceleb1")
    splits: dict[str, set[int]] = defaultdict(set)
    videos: dict[tuple[str, int], set[str]] = defaultdict(set)
    listed, counts = [], Counter()
    for line in (root / "iden_split.txt").read_text().splitlines():
        split, relative = line.split(" ")
        speaker, video, utterance = relative.split("/")
        assert re.fullmatch(r"id1\d{4}", speaker) and re.fullmatch(r"[\w-]{11}", video)
        assert re.fullmatch(r"\d{5}\.wav", utterance)  # the release's names
        splits[speaker].add(int(split))
        videos[speaker, int(split)].add(video)
        listed.append(relative[: -len(".wav")])
        counts[int(split)] += 1
    on_disk = sorted(
        str(p.relative_to(root / "wav"))[: -len(".opus")] for p in root.glob("wav/*/*/*")
    )
    assert sorted(listed) == on_disk
    assert len(splits) >= 20 and all(found == {1, 2, 3} for found in splits.values())
    assert counts[3] >= 200
    # where a reader has several recordings, training and test never share one
    several = [s for s in splits if len(videos[s, 1] | videos[s, 3]) > 1]
    assert len(several) >= 10
    assert all(not videos[s, 1] & videos[s, 3] for s in several)
    test_set = torchaudio.datasets.VoxCeleb1Identification(root, subset="test")
    assert len(test_set) == counts[3]


def test_voxceleb_trials_reference_existing_files_and_are_balanced():
    root = demo_path("voxceleb1")
    trials = torchaudio.datasets.VoxCeleb1Verification(root)
    targets = Counter()
    for n in range(len(trials)):
        enroll, test, _rate, label, _, _ = trials.get_metadata(n)
        for relative in (enroll, test):
            assert resolve_audio(root / "wav" / relative).is_file(), relative
        same_speaker = enroll.split("/")[0] == test.split("/")[0]
        assert same_speaker == bool(label)
        if label:  # target trials cross videos, as in VoxCeleb1-O
            assert enroll.split("/")[1] != test.split("/")[1]
        targets[label] += 1
    assert targets[0] == targets[1] >= 100


def test_ljspeech_metadata_and_libritts_texts():
    root = demo_path("ljspeech")
    dataset = torchaudio.datasets.LJSPEECH(demo_root())
    rows = [line.split("|") for line in (root / "metadata.csv").read_text().splitlines()]
    assert len(rows) == len(dataset) >= 100 and all(len(row) == 3 for row in rows)
    for utterance_id, _raw, normalized in rows:
        assert re.fullmatch(r"LJ\d{3}-\d{4}", utterance_id)
        assert (root / "wavs" / f"{utterance_id}.ogg").is_file()
        assert not re.search(r"\d", normalized)
    assert len({row[2] for row in rows}) == len(rows), "every clip reads another sentence"
    assert len({row[0][:5] for row in rows}) >= 20, "sentences from many chapters"
    assert any(raw != normalized for _, raw, normalized in rows)

    libritts = demo_path("libritts") / "train-clean-100"
    wavs = sorted(libritts.glob("*/*/*.wav"))
    assert len({path.parent.parent.name for path in wavs}) >= 4
    for path in wavs:
        stem = path.name[: -len(".wav")]
        assert re.fullmatch(r"\d+_\d+_\d{6}_\d{6}", stem)
        assert (path.parent / f"{stem}.normalized.txt").read_text().strip()
        assert (path.parent / f"{stem}.original.txt").read_text().strip()
    ood = (demo_root() / "ood_sentences.txt").read_text().splitlines()
    assert len(ood) >= 8 and all(line.strip() for line in ood)


def utterance_statistics(wav: np.ndarray, sample_rate: int = 16000) -> list[float]:
    """Mean/std of frame log-energy and of log-F0 from an autocorrelation peak.

    A hand-written numpy pitch proxy: librosa.yin compiles with numba on first use,
    which alone costs ~10 s and would blow this file's time budget.
    """
    frame, hop = 640, 160
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]  # (F, frame)
    log_energy = np.log(np.mean(frames**2, axis=1) + 1e-8)
    spectrum = np.fft.rfft(frames * np.hanning(frame), n=2 * frame)  # (F, frame + 1)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame]  # (F, frame)
    low, high = sample_rate // 400, sample_rate // 70  # lags for 70..400 Hz
    lag = low + np.argmax(autocorrelation[:, low:high], axis=1)
    voiced = log_energy > log_energy.max() - 5
    log_f0 = np.log(sample_rate / lag[voiced])
    return [log_energy.mean(), log_energy.std(), log_f0.mean(), log_f0.std()]


def test_emotions_are_learnable_from_acoustics_but_not_trivially(iemocap_turns):
    rows = [row for row in iemocap_turns if row["label"] in FOUR_CLASSES]
    features = np.array(
        [utterance_statistics(soundfile.read(row["wav"], dtype="float32")[0]) for row in rows]
    )
    classes = sorted(set(FOUR_CLASSES.values()))
    labels = np.array([classes.index(FOUR_CLASSES[row["label"]]) for row in rows])
    sessions = np.array([row["session"] for row in rows])
    speakers = np.array([row["speaker"] for row in rows])
    # Per-speaker normalisation, as in IEMOCAP practice: removes voice identity, keeps style.
    for speaker in np.unique(speakers):
        mask = speakers == speaker
        features[mask] = (features[mask] - features[mask].mean(0)) / (features[mask].std(0) + 1e-6)
    correct = 0
    for held_out in range(1, 6):  # leave-one-session-out, the standard IEMOCAP protocol
        train, test = sessions != held_out, sessions == held_out
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(features[train], labels[train])
        correct += int((model.predict(features[test]) == labels[test]).sum())
    accuracy = correct / len(rows)
    assert 0.40 < accuracy < 0.95, f"4-class LOSO accuracy {accuracy:.3f}"
