"""Build the real-speech parts of ``speechssl/demo_data`` from public repositories.

Every clip is a human recording under a permissive licence, taken at a pinned commit of a
public GitHub repository (``SOURCES``; each repository's git directory is read with
``git show COMMIT:PATH``, nothing is downloaded here), and written in the real on-disk
layout of its corpus:

* ``LibriSpeech/``  Ogg Opus at 16 kHz, one chapter folder per LibriSpeech reader, no
  ``trans.txt`` (the source carries no transcripts: unlabelled pre-training audio),
  ``SPEAKERS.TXT`` lines copied from the LibriSpeech release;
* ``VoxCeleb1/``    Ogg Opus at 16 kHz under ``wav/idNNNNN/<video>/NNNNN.opus`` with
  ``iden_split.txt`` / ``veri_test.txt`` naming ``.wav`` as the release does (the preparer
  reads the ``.opus`` of the same stem). A LibriSpeech utterance plays a YouTube "video";
  utterances are cut into ~3 s segments at their quietest points;
* ``LJSpeech-1.1/`` Ogg Vorbis at 22,050 Hz (Opus has no 22,050 Hz mode), ``metadata.csv``
  lines copied from the LJ Speech release;
* ``SpeechCommands/`` the Free Spoken Digit Dataset (6 speakers say zero..nine, 50 takes
  each) in the Google Speech Commands layout: ``<word>/<speaker>_nohash_<take>.opus``,
  Ogg Opus at 16 kHz (resampled from 8 kHz), ``validation_list.txt`` / ``testing_list.txt``
  holding one speaker each (``FSDD_SPLITS``), so no held-out speaker is heard in training;
* ``IEMOCAP_full_release/`` the Berlin Database of Emotional Speech (EmoDB, acted German,
  10 speakers) in the IEMOCAP layout: its neutral/happy/angry/sad takes, one female and one
  male speaker per session (as IEMOCAP pairs its actors), one ``script`` dialog per speaker,
  Ogg Opus at 16 kHz; ``EMODB_SOURCES.tsv`` maps every utterance to its EmoDB file.

Lossy coding keeps 70 minutes of speech in ~20 MB; Kaldi fbank features of the decoded
audio stay within a fraction of a nat of the lossless original's (see
``tests/unit/data/test_prepare_compressed.py``). The Ogg stream serial numbers are fixed,
so two runs write byte-identical files. ``speechssl/demo_data/NOTICE.md`` records the
sources and licences; ``tools/make_demo_corpus.py`` calls this for the real corpora.

``--corpora minilibrispeech`` writes the development corpus outside the wheel instead:
Mini LibriSpeech (``train-clean-5``: 1,519 utterances, 28 readers, 5 hours, with their
``trans.txt``) as Ogg Opus at about 21 kbit/s under ``--dev-out`` (``data/LibriSpeech/``;
``data/NOTICE.md`` records its source).

Example:
    python tools/make_real_demo.py --mirror /work/.mirror --out speechssl/demo_data
    python tools/make_real_demo.py --corpora minilibrispeech --dev-out data
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import shutil
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional

from speechssl.data.layouts import iemocap, librispeech, ljspeech, speech_commands, voxceleb1

SEGMENT_SECONDS = 3.0  # VoxCeleb1 utterances are 4-20 s; ~3 s pieces give several per reader
OPUS_LEVEL = 0.9  # libsndfile compression level: about 30 kbit/s for 16 kHz speech
DEV_OPUS_LEVEL = 0.94  # about 21 kbit/s: Mini LibriSpeech's 5 hours in ~47 MB
ENCODER_THREADS = 2
VORBIS_LEVEL = 0.6  # about 40 kbit/s at 22,050 Hz


@dataclass(frozen=True)
class Source:
    """One public repository at one commit; ``mirror`` is its folder under ``--mirror``."""

    repo: str
    commit: str

    @property
    def mirror(self) -> str:
        return self.repo.replace("/", "+")


SOURCES = {
    # 251 train-clean-100 readers x 1 utterance, 10 test-other readers x 10 (LibriSpeech, CC BY 4.0)
    "resemblyzer": Source("resemble-ai/Resemblyzer", "15d828edebe06bc72b9cabc8ef8ca5ab2cb457ce"),
    # LibriSpeech SPEAKERS.TXT and LICENSE.TXT as released (the audio there is Git LFS only)
    "librispeech_meta": Source(
        "Ironmomo/SpeakerVerificationBA", "2dd9e4176ac5981cfc86eb407363dac97ef17d20"
    ),
    # 46 LJ Speech clips across the corpus + the release's metadata.csv and README
    "lj_kritika": Source(
        "Kritika09092004/TTS_Fine_Tuning_Project", "5dc7986d8e25fd2a022c8629aec83667d0a37f08"
    ),
    # 32 LJ Speech clips (LJ001) in a TTS test fixture
    "lj_coqui": Source("coqui-ai/TTS", "dbf1a08a0d4e47fdad6172e433eeb34bc6b13b4e"),
    # 44 LJ Speech clips (LJ050-0235..0278) from the 16 kHz resampled release
    "lj_harini": Source("HariniBennuri/VERBAL-NOTUS-", "4c11f407cf69146c879b545480ec5e2a46f7ec2c"),
    # EmoDB's 535 original 16 kHz WAVs (download/wav/, deleted at the repository's HEAD)
    "emodb": Source(
        "zhufeiyao/Berlin-Database-of-Emotional-Speech_2020",
        "1b79ba1afb9357df582f9e970d36cca7a168cba1",
    ),
    # audEERING's publication of EmoDB: the CC0-1.0 grant (README.md) and the speakers'
    # genders (1.1.1/publish.py)
    "emodb_meta": Source("audeering/emodb", "4b446d7cb4200897197ce805e8eaceef616edb4e"),
    # Mini LibriSpeech (OpenSLR 31): train-clean-5, 1,519 FLAC utterances of 28 readers with
    # their trans.txt, and LibriSpeech's SPEAKERS.TXT, CHAPTERS.TXT, README.TXT, LICENSE.TXT
    "minilibrispeech": Source("zhangrui0712/Voice-Age", "c13f844098b754edb9c60b8deb1aa586bc461d8a"),
    # Free Spoken Digit Dataset: 6 speakers x 10 digits x 50 takes, 8 kHz (CC BY-SA 4.0)
    "fsdd": Source(
        "Jakobovski/free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
    ),
}
RESEMBLYZER_TRAIN = "audio_data/librispeech_train-clean-100"
RESEMBLYZER_OTHER = "audio_data/librispeech_test-other"


class Repositories:
    """Reads files of the ``SOURCES`` from their fetched git directories."""

    def __init__(self, mirror: Path) -> None:
        self.mirror = mirror

    def git_dir(self, name: str) -> Path:
        path = self.mirror / SOURCES[name].mirror / "repo"
        if (path / ".git").is_dir():  # fetched with a work tree rather than bare
            path = path / ".git"
        if not path.is_dir():
            raise SystemExit(
                f"error: {SOURCES[name].repo} is not fetched under {self.mirror} "
                f"(expected the git directory {path})"
            )
        return path

    def read(self, name: str, path: str) -> bytes:
        command = ["git", "--git-dir", str(self.git_dir(name)), "show"]
        result = subprocess.run(
            [*command, f"{SOURCES[name].commit}:{path}"], check=True, capture_output=True
        )
        return result.stdout

    def list(self, name: str, folder: str) -> list[str]:
        command = ["git", "--git-dir", str(self.git_dir(name)), "ls-tree", "-r", "--name-only"]
        result = subprocess.run(
            [*command, SOURCES[name].commit, folder], check=True, capture_output=True, text=True
        )
        # ls-tree quotes names with odd characters; the sources here have none
        return sorted(result.stdout.split())

    def audio(self, name: str, path: str) -> tuple[np.ndarray, int]:
        wav, rate = soundfile.read(io.BytesIO(self.read(name, path)), dtype="float32")
        return wav, rate


# ---------------------------------------------------------------------------------------
# Deterministic Ogg files
# ---------------------------------------------------------------------------------------


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        value = byte << 24
        for _ in range(8):
            value = ((value << 1) ^ 0x04C11DB7) if value & 0x80000000 else value << 1
        table.append(value & 0xFFFFFFFF)
    return table


OGG_CRC_TABLE = _ogg_crc_table()


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, no final xor."""
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ OGG_CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def with_serial(data: bytes, serial: int) -> bytes:
    """The Ogg file ``data`` with every page's stream serial number set to ``serial``.

    libsndfile draws the serial at random, so the same audio would differ byte for byte
    between two builds; the page checksums are recomputed.
    """
    pages, offset = [], 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {offset}")
        segments = data[offset + 26]
        table = data[offset + 27 : offset + 27 + segments]
        end = offset + 27 + segments + sum(table)
        page = bytearray(data[offset:end])
        page[14:18] = serial.to_bytes(4, "little")
        page[22:26] = b"\0\0\0\0"
        page[22:26] = _ogg_crc(bytes(page)).to_bytes(4, "little")
        pages.append(bytes(page))
        offset = end
    return b"".join(pages)


def write_ogg(
    root: Path, relative: str, wav: np.ndarray, rate: int, opus_level: float = OPUS_LEVEL
) -> float:
    """Write ``wav`` to ``root / relative`` as Ogg Opus (16/24/48 kHz, libsndfile's
    ``opus_level``) or Ogg Vorbis; returns the seconds written. The stream serial comes
    from ``relative``: the same in every build, different between files."""
    buffer = io.BytesIO()
    if rate in (8000, 12000, 16000, 24000, 48000):
        soundfile.write(
            buffer, wav, rate, format="OGG", subtype="OPUS", compression_level=opus_level
        )
    else:
        soundfile.write(
            buffer, wav, rate, format="OGG", subtype="VORBIS", compression_level=VORBIS_LEVEL
        )
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(with_serial(buffer.getvalue(), zlib.crc32(relative.encode())))
    return len(wav) / rate


# ---------------------------------------------------------------------------------------
# Segmentation and splits
# ---------------------------------------------------------------------------------------


def cut_points(wav: np.ndarray, rate: int, seconds: float = SEGMENT_SECONDS) -> list[int]:
    """Sample indices that cut ``wav`` into pieces of about ``seconds``, each moved to the
    quietest 10 ms hop within 0.4 s of its nominal place (a pause between words).

    Example:
        >>> cut_points(np.ones(16000 * 7, dtype="float32"), 16000)[0]
        0
    """
    pieces = max(1, round(len(wav) / rate / seconds))
    hop = rate // 100
    energy = np.array([np.mean(wav[i : i + hop] ** 2) for i in range(0, len(wav) - hop + 1, hop)])
    points = [0]
    for piece in range(1, pieces):
        nominal = piece * len(wav) // pieces // hop  # in hops
        low, high = max(0, nominal - 40), min(len(energy), nominal + 41)
        points.append((low + int(np.argmin(energy[low:high]))) * hop)
    return points + [len(wav)]


def segments(wav: np.ndarray, rate: int) -> list[np.ndarray]:
    points = cut_points(wav, rate)
    return [wav[start:end] for start, end in itertools.pairwise(points) if end > start]


def split_codes(count: int) -> list[int]:
    """VoxCeleb1 ``iden_split`` codes for ``count`` segments of one recording, in time order:
    the first pieces train (1), one validates (2), the last pieces test (3)."""
    if count < 3:
        raise ValueError(f"need at least 3 segments for train/dev/test, got {count}")
    tests = 2 if count >= 5 else 1
    return [1] * (count - tests - 1) + [2] + [3] * tests


# ---------------------------------------------------------------------------------------
# The corpora
# ---------------------------------------------------------------------------------------


@dataclass
class Summary:
    files: int = 0
    seconds: float = 0.0
    speakers: int = 0

    def add(self, seconds: float) -> None:
        self.files += 1
        self.seconds += seconds


def librispeech_readers(repositories: Repositories) -> list[tuple[str, str, str]]:
    """``(speaker, chapter, git path)`` of the 251 one-utterance train-clean-100 readers."""
    readers = []
    for path in repositories.list("resemblyzer", RESEMBLYZER_TRAIN + "/"):
        if not path.endswith(".flac"):
            continue
        speaker, chapter, _ = Path(path).stem.split("-")
        readers.append((speaker, chapter, path))
    return readers


def assign_readers(
    repositories: Repositories, num_voxceleb: int, num_dev: int, seed: int
) -> dict[str, list[tuple[str, str, str]]]:
    """Disjoint reader sets: VoxCeleb1 speakers (utterances long enough for three segments),
    LibriSpeech dev-clean and train-clean-100 (the rest); a seeded draw, so reproducible."""
    readers = librispeech_readers(repositories)
    rng = np.random.default_rng(seed)
    order = [readers[i] for i in rng.permutation(len(readers))]
    durations = {
        path: soundfile.info(io.BytesIO(repositories.read("resemblyzer", path))).duration
        for _, _, path in readers
    }
    long_enough = [r for r in order if durations[r[2]] >= 3.5 * SEGMENT_SECONDS]
    voxceleb = sorted(long_enough[:num_voxceleb])
    rest = [r for r in order if r not in voxceleb]
    return {
        "voxceleb": voxceleb,
        "dev-clean": sorted(rest[:num_dev]),
        "train": sorted(rest[num_dev:]),
    }


def write_librispeech(
    out: Path, repositories: Repositories, readers: dict[str, list[tuple[str, str, str]]]
) -> Summary:
    """``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-0000.opus`` + SPEAKERS.TXT."""
    summary = Summary()
    subsets = {"train-clean-100": readers["train"], "dev-clean": readers["dev-clean"]}
    for subset, members in subsets.items():
        for speaker, chapter, path in members:
            wav, rate = repositories.audio("resemblyzer", path)
            target = librispeech.audio_path(out, subset, speaker, chapter, 0, ".opus")
            summary.add(write_ogg(out, target.relative_to(out).as_posix(), wav, rate))
    used = {speaker for members in subsets.values() for speaker, _, _ in members}
    summary.speakers = len(used)
    write_speakers_file(out, repositories, used)
    (out / "LICENSE.TXT").write_bytes(
        repositories.read("librispeech_meta", "data/LibriSpeech/LICENSE.TXT")
    )
    return summary


def release_lines(text: str, keys: set[str], name: str) -> tuple[list[str], list[str]]:
    """``(';' header lines, the lines whose first '|' field is in keys)`` of a LibriSpeech
    SPEAKERS.TXT or CHAPTERS.TXT, verbatim; every key must have its line."""
    header = [line for line in text.splitlines() if line.startswith(";")]
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith(";") and line.split("|")[0].strip() in keys
    ]
    found = {line.split("|")[0].strip() for line in lines}
    if found != keys:
        raise SystemExit(f"error: {name} lacks {sorted(keys - found)}")
    return header, lines


def write_speakers_file(
    corpus: Path,
    repositories: Repositories,
    speakers: set[str],
    source: tuple[str, str] = ("librispeech_meta", "data/LibriSpeech/SPEAKERS.TXT"),
) -> None:
    """The release's SPEAKERS.TXT (``source``: a ``SOURCES`` name and path): its ';'
    header, then its lines for ``speakers`` verbatim."""
    text = repositories.read(*source).decode()
    header, lines = release_lines(text, speakers, "SPEAKERS.TXT")
    librispeech.write_speakers_file(corpus, lines, header=header)


def voxceleb_speaker(librispeech_speaker: str) -> str:
    """``id1`` + the LibriSpeech reader id on four digits: ``19 -> id10019``, traceable."""
    return f"id1{int(librispeech_speaker):04d}"


def video_id(chapter: str, utterance: str) -> str:
    """An 11-character "YouTube id" naming one LibriSpeech utterance: ``L121119U0000``[:11]."""
    return f"L{int(chapter):06d}U{int(utterance):03d}"


def write_voxceleb1(
    out: Path, repositories: Repositories, readers: list[tuple[str, str, str]], seed: int
) -> Summary:
    """VoxCeleb1 layout from one-utterance readers (train/dev/test are consecutive segments
    of that utterance) and ten-utterance test-other readers (train, dev and test segments
    come from different utterances; the verification trials use these readers)."""
    summary = Summary()
    iden, test_segments = [], {}
    for speaker, chapter, path in readers:
        wav, rate = repositories.audio("resemblyzer", path)
        pieces = segments(wav, rate)
        for number, (piece, code) in enumerate(zip(pieces, split_codes(len(pieces))), start=1):
            relative = voxceleb1.utterance(
                voxceleb_speaker(speaker), video_id(chapter, "0"), number
            )
            summary.add(write_ogg(out, f"wav/{relative}.opus", piece, rate))
            iden.append((code, relative))
    other = [
        p for p in repositories.list("resemblyzer", RESEMBLYZER_OTHER + "/") if p.endswith(".flac")
    ]
    for speaker in sorted({Path(path).parent.name for path in other}, key=int):
        utterances = [path for path in other if Path(path).parent.name == speaker]
        # utterances in order: the first half trains, one validates, the rest test
        codes = (
            [1] * (len(utterances) // 2) + [2] + [3] * (len(utterances) - len(utterances) // 2 - 1)
        )
        number = 0
        for path, code in zip(utterances, codes):
            _, chapter, utterance = Path(path).stem.split("-")
            wav, rate = repositories.audio("resemblyzer", path)
            for piece in segments(wav, rate):
                number += 1
                relative = voxceleb1.utterance(
                    voxceleb_speaker(speaker), video_id(chapter, utterance), number
                )
                summary.add(write_ogg(out, f"wav/{relative}.opus", piece, rate))
                iden.append((code, relative))
                if code == 3:
                    test_segments.setdefault(speaker, []).append(relative)
    summary.speakers = len(readers) + len(test_segments)
    voxceleb1.write_identification_split(out, iden)
    voxceleb1.write_trials(out, trials(test_segments, seed))
    return summary


def trials(test_segments: dict[str, list[str]], seed: int) -> list[tuple[int, str, str]]:
    """VoxCeleb1-O style ``(label, enrol, test)`` trials: each test segment enrolls once
    against a segment of the same reader from another utterance ("video") and once against
    another reader."""
    rng = np.random.default_rng(seed)
    speakers = sorted(test_segments)
    lines = []
    for speaker in speakers:
        for enroll in test_segments[speaker]:
            video = enroll.split("/")[1]
            others = [s for s in test_segments[speaker] if s.split("/")[1] != video]
            target = others[int(rng.integers(len(others)))]
            impostor = speakers[int(rng.integers(len(speakers) - 1))]
            impostor = speakers[-1] if impostor == speaker else impostor
            nontarget = test_segments[impostor][int(rng.integers(len(test_segments[impostor])))]
            lines += [(1, enroll, target), (0, enroll, nontarget)]
    return lines


def lj_clips(repositories: Repositories) -> dict[str, tuple[str, str]]:
    """LJ id -> (source, git path); the first source listing an id wins."""
    clips: dict[str, tuple[str, str]] = {}
    listings = [
        ("lj_kritika", [p for p in repositories.list("lj_kritika", ".") if p.startswith("LJ")]),
        ("lj_coqui", repositories.list("lj_coqui", "tests/data/ljspeech/wavs")),
        ("lj_harini", [p for p in repositories.list("lj_harini", ".") if p.startswith("LJ")]),
    ]
    for name, paths in listings:
        for path in paths:
            if path.endswith(".wav"):
                clips.setdefault(Path(path).stem, (name, path))
    return dict(sorted(clips.items()))


def write_ljspeech(out: Path, repositories: Repositories) -> Summary:
    """``metadata.csv`` (the release's lines) + ``wavs/<id>.ogg`` at 22,050 Hz."""
    summary = Summary(speakers=1)
    metadata_text = repositories.read("lj_kritika", "metadata.csv").decode("utf-8")
    rows = {
        fields[0]: fields
        for fields in csv.reader(io.StringIO(metadata_text), delimiter="|", quoting=csv.QUOTE_NONE)
        if fields
    }
    lines = []
    for utterance_id, (source, path) in lj_clips(repositories).items():
        wav, rate = repositories.audio(source, path)
        if rate != 22050:
            # the 16 kHz copies keep their 8 kHz band; resampled to the corpus rate
            wav = torchaudio.functional.resample(torch.from_numpy(wav), rate, 22050).numpy()
        target = ljspeech.audio_path(out, utterance_id, ".ogg").relative_to(out).as_posix()
        summary.add(write_ogg(out, target, wav, 22050))
        lines.append(rows[utterance_id])
    ljspeech.write_metadata(out, lines)
    (out / "README").write_bytes(repositories.read("lj_kritika", "README"))
    return summary


EMODB_WAVS = "download/wav"
# EmoDB's emotion letter (the 6th character of a file name) -> the IEMOCAP label; the
# other three (A fear, E disgust, L boredom) are outside IEMOCAP's 4-class protocol
EMODB_EMOTIONS = {"N": "neu", "F": "hap", "W": "ang", "T": "sad"}
# speaker -> gender, as audeering/emodb 1.1.1/publish.py lists them (1.1.0 had them wrong)
EMODB_GENDERS = {
    "03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
    "12": "M", "13": "F", "14": "F", "15": "M", "16": "F",
}  # fmt: skip


def emodb_sessions() -> dict[str, int]:
    """Speaker -> IEMOCAP session: the i-th female and the i-th male speaker (by number)
    share session i, as IEMOCAP's sessions each pair one actress and one actor."""
    females = sorted(speaker for speaker, gender in EMODB_GENDERS.items() if gender == "F")
    males = sorted(speaker for speaker, gender in EMODB_GENDERS.items() if gender == "M")
    return {
        speaker: session
        for session, pair in enumerate(zip(females, males, strict=True), start=1)
        for speaker in pair
    }


def write_iemocap(out: Path, repositories: Repositories) -> Summary:
    """EmoDB's neu/hap/ang/sad takes as ``Session<n>/sentences/wav/<dialog>/<utt>.opus``
    with one EmoEvaluation file per dialog (the label is EmoDB's acted emotion, which at
    least 80 % of its 20 listeners recognised; EmoDB has no dimensional ratings, so the
    summary lines' [V, A, D] are 0) and ``EMODB_SOURCES.tsv``."""
    sessions = emodb_sessions()
    summary = Summary(speakers=len(sessions))
    takes: dict[str, list[str]] = {speaker: [] for speaker in sessions}
    for path in repositories.list("emodb", EMODB_WAVS):
        stem = Path(path).stem  # 03a01Fa: speaker 03, sentence a01, emotion F, take a
        if path.endswith(".wav") and stem[5] in EMODB_EMOTIONS:
            takes[stem[:2]].append(path)
    sources = ["utterance\temodb_file\tspeaker\tsentence\temotion"]
    for speaker, paths in takes.items():
        gender, session = EMODB_GENDERS[speaker], sessions[speaker]
        dialog = f"Ses{session:02d}{gender}_script01"
        clock, turns = 0.0, []
        for index, path in enumerate(paths):
            stem = Path(path).stem
            utterance = f"{dialog}_{gender}{index:03d}"
            wav, rate = repositories.audio("emodb", path)
            target = iemocap.audio_path(out, session, dialog, utterance).with_suffix(".opus")
            seconds = write_ogg(out, target.relative_to(out).as_posix(), wav, rate)
            summary.add(seconds)
            label = EMODB_EMOTIONS[stem[5]]
            turns.append(
                iemocap.turn_lines(utterance, label, clock, clock + seconds, (0, 0, 0), [], [])
            )
            clock += seconds + 1.0
            sources.append(f"{utterance}\t{Path(path).name}\t{speaker}\t{stem[2:5]}\t{stem[5]}")
        iemocap.write_evaluation(out, session, dialog, turns)
    (out / "EMODB_SOURCES.tsv").write_text("\n".join(sources) + "\n")
    return summary


FSDD_RECORDINGS = "recordings"
FSDD_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# whole speakers per split: four train; the held-out two each share an accent with one
# training speaker (lucas/yweweler German, theo/jackson US English)
FSDD_SPLITS = {"validation": ("lucas",), "testing": ("theo",)}


def write_speech_commands(out: Path, repositories: Repositories) -> Summary:
    """FSDD's ``recordings/<digit>_<speaker>_<take>.wav`` as
    ``<word>/<speaker>_nohash_<take>.opus`` at 16 kHz + the two split lists."""
    summary = Summary()
    held_out = {split: [] for split in FSDD_SPLITS}
    speakers = set()
    for path in repositories.list("fsdd", FSDD_RECORDINGS):
        digit, speaker, take = Path(path).stem.split("_")
        wav, rate = repositories.audio("fsdd", path)
        wav = torchaudio.functional.resample(torch.from_numpy(wav), rate, 16000).numpy()
        relative = speech_commands.clip(FSDD_WORDS[int(digit)], speaker, int(take))
        summary.add(write_ogg(out, f"{relative}.opus", wav, 16000))
        speakers.add(speaker)
        for split, members in FSDD_SPLITS.items():
            if speaker in members:
                held_out[split].append(relative)
    for split, clips in held_out.items():
        speech_commands.write_split_list(out, split, sorted(clips))
    summary.speakers = len(speakers)
    return summary


MINI_LIBRISPEECH = "LibriSpeech"
MINI_SUBSET = "train-clean-5"


def write_minilibrispeech(out: Path, repositories: Repositories) -> Summary:
    """Mini LibriSpeech as ``<subset>/<speaker>/<chapter>/<id>.opus`` (whole utterances,
    ``DEV_OPUS_LEVEL``) with each chapter's ``trans.txt`` (byte for byte), SPEAKERS.TXT and
    CHAPTERS.TXT lines of its readers and chapters, README.TXT and LICENSE.TXT."""
    summary = Summary()
    paths = repositories.list("minilibrispeech", f"{MINI_LIBRISPEECH}/{MINI_SUBSET}/")
    for path in paths:
        if path.endswith(".trans.txt"):
            speaker, chapter = path.split("/")[-3:-1]
            text = repositories.read("minilibrispeech", path)
            lines = [line.split(" ", 1) for line in text.decode().splitlines()]
            written = librispeech.write_transcript(out, MINI_SUBSET, speaker, chapter, lines)
            if written.read_bytes() != text:
                raise SystemExit(f"error: {path} is not rewritten byte for byte")
    flacs = [path for path in paths if path.endswith(".flac")]

    def encode(path: str) -> float:
        speaker, chapter, name = path.split("/")[-3:]
        wav, rate = repositories.audio("minilibrispeech", path)
        number = int(Path(name).stem.rsplit("-", 1)[1])
        target = librispeech.audio_path(out, MINI_SUBSET, speaker, chapter, number, ".opus")
        relative = target.relative_to(out).as_posix()
        return write_ogg(out, relative, wav, rate, opus_level=DEV_OPUS_LEVEL)

    # the encoder releases the GIL; each file's bytes depend on its path only
    with ThreadPoolExecutor(max_workers=ENCODER_THREADS) as pool:
        for seconds in pool.map(encode, flacs):
            summary.add(seconds)
    summary.speakers = write_minilibrispeech_tables(out, repositories, flacs)
    return summary


def write_minilibrispeech_tables(out: Path, repositories: Repositories, flacs: list[str]) -> int:
    """SPEAKERS.TXT and CHAPTERS.TXT lines of the readers and chapters of ``flacs``,
    README.TXT and LICENSE.TXT; returns the number of readers."""
    speakers = {path.split("/")[-3] for path in flacs}
    chapters = {path.split("/")[-2] for path in flacs}
    source = ("minilibrispeech", f"{MINI_LIBRISPEECH}/SPEAKERS.TXT")
    write_speakers_file(out, repositories, speakers, source)
    text = repositories.read("minilibrispeech", f"{MINI_LIBRISPEECH}/CHAPTERS.TXT").decode()
    librispeech.write_chapters_file(out, *release_lines(text, chapters, "CHAPTERS.TXT"))
    for name in ("README.TXT", "LICENSE.TXT"):
        (out / name).write_bytes(repositories.read("minilibrispeech", f"{MINI_LIBRISPEECH}/{name}"))
    return len(speakers)


def folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


CORPORA = ("LibriSpeech", "VoxCeleb1", "LJSpeech-1.1", "IEMOCAP_full_release", "SpeechCommands")


# the development corpus outside the wheel (``--dev-out``): corpus name -> its folder there
DEV_CORPORA = {"minilibrispeech": MINI_LIBRISPEECH}


def corpus_folder(name: str, out: Path, dev_out: Path) -> Path:
    """Where corpus ``name`` is written: ``out/<name>``, or under ``dev_out`` for the
    development corpora."""
    return dev_out / DEV_CORPORA[name] if name in DEV_CORPORA else out / name


def build(
    out: Path,
    mirror: Path,
    seed: int = 0,
    corpora: tuple[str, ...] = CORPORA,
    dev_out: Path = Path("data"),
) -> dict[str, Summary]:
    """Write the ``corpora`` (default the demo's: LibriSpeech/, VoxCeleb1/, LJSpeech-1.1/,
    IEMOCAP_full_release/ and SpeechCommands/) under ``out``, and those of ``DEV_CORPORA``
    (``minilibrispeech``: ``dev_out/LibriSpeech/``) under ``dev_out``, replacing them."""
    repositories = Repositories(mirror)
    folders = {name: corpus_folder(name, out, dev_out) for name in corpora}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)  # a rerun replaces, never appends
    readers = {}  # drawn only when LibriSpeech or VoxCeleb1 is built

    def assigned() -> dict[str, list[tuple[str, str, str]]]:
        if not readers:
            readers.update(assign_readers(repositories, num_voxceleb=90, num_dev=10, seed=seed))
        return readers

    writers = {
        "LibriSpeech": lambda: write_librispeech(out / "LibriSpeech", repositories, assigned()),
        "VoxCeleb1": lambda: write_voxceleb1(
            out / "VoxCeleb1", repositories, assigned()["voxceleb"], seed
        ),
        "LJSpeech-1.1": lambda: write_ljspeech(out / "LJSpeech-1.1", repositories),
        "IEMOCAP_full_release": lambda: write_iemocap(out / "IEMOCAP_full_release", repositories),
        "SpeechCommands": lambda: write_speech_commands(out / "SpeechCommands", repositories),
        "minilibrispeech": lambda: write_minilibrispeech(folders["minilibrispeech"], repositories),
    }
    return {name: writers[name]() for name in corpora}


def print_summaries(out: Path, summaries: dict[str, Summary], dev_out: Path = Path("data")) -> None:
    print(f"{'corpus':<22}{'files':>7}{'speakers':>9}{'minutes':>9}{'MB':>8}")
    for name, summary in summaries.items():
        megabytes = folder_megabytes(corpus_folder(name, out, dev_out))
        minutes = summary.seconds / 60
        print(f"{name:<22}{summary.files:>7}{summary.speakers:>9}{minutes:>9.1f}{megabytes:>8.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("speechssl/demo_data"))
    parser.add_argument(
        "--mirror",
        type=Path,
        default=Path("/work/.mirror"),
        help="folder holding <owner>+<name>/repo git directories of the SOURCES",
    )
    parser.add_argument(
        "--dev-out",
        type=Path,
        default=Path("data"),
        help="folder of the development corpus outside the wheel (minilibrispeech)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--corpora",
        nargs="+",
        choices=[*CORPORA, *DEV_CORPORA],
        default=list(CORPORA),
        help="rebuild only these (default: the embedded demo's; minilibrispeech goes to --dev-out)",
    )
    args = parser.parse_args(argv)
    summaries = build(args.out, args.mirror, args.seed, tuple(args.corpora), args.dev_out)
    print_summaries(args.out, summaries, args.dev_out)


if __name__ == "__main__":
    main()
