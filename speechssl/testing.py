"""Helpers that fabricate tiny corpora in their exact real layouts, for tests and examples.

Every ``make_*_tree(root, ...)`` writes short synthetic tones plus the corpus's own
metadata files (transcripts, split lists, evaluation files, speaker tables, including
their oddities) under ``root`` and returns the corpus root folder
(``root/LibriSpeech``, ``root/IEMOCAP_full_release``, ...). ``plant_bad_audio`` replaces a
file with one a preparer must reject.

Example:
    >>> import tempfile
    >>> root = make_iemocap_tree(tempfile.mkdtemp(), sessions=(1,))
    >>> sorted(p.name for p in (root / "Session1" / "sentences" / "wav").iterdir())
    ['Ses01F_impro01', 'Ses01M_script01_1']
"""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import numpy as np
import soundfile

from speechssl.data.layouts import (
    folder,
    iemocap,
    librispeech,
    libritts,
    ljspeech,
    speech_commands,
    vctk,
    voxceleb1,
)
from speechssl.data.layouts.folder import write_labelled_csv

__all__ = [
    "BAD_AUDIO_KINDS",
    "IEMOCAP_LABEL_CYCLE",
    "make_folder_tree",
    "make_iemocap_tree",
    "make_librispeech_tree",
    "make_libritts_tree",
    "make_ljspeech_tree",
    "make_speech_commands_tree",
    "make_vctk_tree",
    "make_voxceleb1_tree",
    "plant_bad_audio",
    "speech_commands_subset",
    "write_class_problem",
    "write_labelled_csv",
    "write_tone",
]

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "birds",
    "sing",
    "softly",
]


def write_tone(
    path: str | os.PathLike,
    seconds: float = 0.3,
    sample_rate: int = 16000,
    frequency: float = 220.0,
    subtype: str | None = None,
) -> Path:
    """Write a mono sine tone (format from the extension: .wav .flac .ogg); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = (0.3 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)
    soundfile.write(str(path), tone, sample_rate, subtype=subtype)
    return path


# kind -> the reason ``speechssl prepare`` gives when it meets such a file
BAD_AUDIO_KINDS = {
    "missing": "missing",
    "empty": "empty",
    "unreadable": "unreadable",
    "truncated": "truncated",
    "non-finite": "non-finite",
    "zero-length": "zero-length",
    "too-short": "too-short",
}


def plant_bad_audio(path: str | os.PathLike, kind: str, sample_rate: int = 16000) -> str:
    """Replace ``path`` with a bad file of ``kind`` (a key of ``BAD_AUDIO_KINDS``).

    ``truncated`` cuts a valid file in half (WAV header then declares more data than
    there is; FLAC frames break); ``non-finite`` writes float WAV samples with a NaN
    (WAV only: FLAC cannot store NaN); ``too-short`` is 50 ms. Returns the expected reason.
    """
    path = Path(path)
    if kind not in BAD_AUDIO_KINDS:
        raise ValueError(f"unknown bad audio kind {kind!r}; choose from {sorted(BAD_AUDIO_KINDS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "unreadable":
        path.write_bytes(b"this is not audio\n" * 8)
    elif kind == "truncated":
        write_tone(path, seconds=0.5, sample_rate=sample_rate)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "non-finite":
        if path.suffix.lower() != ".wav":
            raise ValueError("non-finite samples need a float WAV file")
        samples = np.zeros(int(0.3 * sample_rate), dtype=np.float32)
        samples[100] = np.nan
        soundfile.write(str(path), samples, sample_rate, subtype="FLOAT")
    elif kind == "zero-length":
        soundfile.write(str(path), np.zeros(0, dtype=np.float32), sample_rate)
    elif kind == "too-short":
        write_tone(path, seconds=0.05, sample_rate=sample_rate)
    return BAD_AUDIO_KINDS[kind]


def _sentence(rng: random.Random, words: int = 5) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


# ---------------------------------------------------------------------------------------
# LibriSpeech


def make_librispeech_tree(
    root: str | os.PathLike,
    subsets: tuple[str, ...] = ("train-clean-100", "dev-clean"),
    speakers_per_subset: int = 2,
    utterances_per_chapter: int = 2,
    seconds: float = 0.3,
) -> Path:
    """``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac`` + transcripts.

    Speaker ids are 19, 26, 32, ...; one chapter per speaker (198, 199, ...).
    ``SPEAKERS.TXT`` has the real ';' comment header and a name containing '|'.
    """
    rng = random.Random(0)
    corpus = Path(root) / librispeech.FOLDER
    speaker_lines = []
    speaker_id, chapter_id = 19, 198
    for subset in subsets:
        for _ in range(speakers_per_subset):
            transcript = []
            for number in range(1, utterances_per_chapter + 1):
                write_tone(
                    librispeech.audio_path(corpus, subset, speaker_id, chapter_id, number),
                    seconds,
                    16000,
                    200 + 20 * number,
                )
                utterance = librispeech.utterance_id(speaker_id, chapter_id, number)
                transcript.append((utterance, _sentence(rng).upper()))
            librispeech.write_transcript(corpus, subset, speaker_id, chapter_id, transcript)
            gender = "F" if speaker_id % 2 else "M"
            # the real file has a reader called "|CBW|Simon": names may contain '|'
            name = "|CBW|Simon" if speaker_id == 26 else f"Reader {speaker_id}"
            speaker_lines.append(librispeech.speaker_line(speaker_id, gender, subset, 25.19, name))
            speaker_id, chapter_id = speaker_id + 7, chapter_id + 1
    librispeech.write_speakers_file(corpus, speaker_lines)
    (corpus / "CHAPTERS.TXT").write_text(";ID    |READER|MINUTES| SUBSET\n", encoding="utf-8")
    (corpus / "README.TXT").write_text("LibriSpeech ASR corpus (synthetic fixture)\n")
    return corpus


# ---------------------------------------------------------------------------------------
# VoxCeleb1


def _video_id(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "_-") for _ in range(11))


def make_voxceleb1_tree(
    root: str | os.PathLike,
    num_speakers: int = 3,
    videos_per_speaker: int = 2,
    utterances_per_video: int = 2,
    seconds: float = 0.3,
    verification_only_speaker: bool = True,
) -> Path:
    """``VoxCeleb1/wav/idNNNNN/<11-char video>/NNNNN.wav`` + ``iden_split.txt`` + ``veri_test.txt``
    + ``vox1_meta.csv``.

    Each speaker's utterances get split codes cycling 1, 1, 2, 3 (train, train, dev, test).
    With ``verification_only_speaker``, speaker ``id10270`` has wavs that only trials use
    (not in ``iden_split.txt``). Trials pair every speaker with itself (label 1, across
    videos) and with the next speaker (label 0).
    """
    rng = random.Random(1)
    corpus = Path(root) / voxceleb1.FOLDER
    speakers = [f"id{10001 + index}" for index in range(num_speakers)]
    if verification_only_speaker:
        speakers.append("id10270")
    files: dict[str, list[str]] = {}
    split = []
    codes = ("1", "1", "2", "3")
    for speaker in speakers:
        files[speaker] = []
        for _ in range(videos_per_speaker):
            video = _video_id(rng)
            for number in range(1, utterances_per_video + 1):
                relative = voxceleb1.utterance(speaker, video, number)
                write_tone(
                    voxceleb1.audio_path(corpus, relative),
                    seconds,
                    16000,
                    150 + 10 * len(files[speaker]),
                )
                if speaker != "id10270" or not verification_only_speaker:
                    split.append((codes[len(files[speaker]) % len(codes)], relative))
                files[speaker].append(relative)
    voxceleb1.write_identification_split(corpus, split)
    voxceleb1.write_meta(
        corpus,
        [
            (spk, f"Celeb_{i}", "fm"[i % 2], "USA", "test" if spk == "id10270" else "dev")
            for i, spk in enumerate(speakers)
        ],
    )
    trials = []
    for index, speaker in enumerate(speakers):
        other = speakers[(index + 1) % len(speakers)]
        trials.append((1, files[speaker][0], files[speaker][-1]))
        trials.append((0, files[speaker][0], files[other][-1]))
    voxceleb1.write_trials(corpus, trials)
    return corpus


# ---------------------------------------------------------------------------------------
# IEMOCAP

# labels given in turn to the fixture's utterances: the four kept classes, exc (merged into
# hap) and labels the 4-class protocol drops
IEMOCAP_LABEL_CYCLE = ("neu", "hap", "ang", "sad", "exc", "fru", "xxx", "sur")
# the categorical names of the fixture's labels ("xxx": no majority)
_CATEGORY_NAMES = {**iemocap.CATEGORY_NAMES, "xxx": "Other"}


def make_iemocap_tree(
    root: str | os.PathLike,
    sessions: tuple[int, ...] = (1, 2),
    utterances_per_dialog: int = 4,
    seconds: float = 0.3,
    folder_name: str = "IEMOCAP_full_release",
) -> Path:
    """``IEMOCAP_full_release/Session<n>/sentences/wav/<dialog>/<utterance>.wav`` + EmoEvaluation.

    Each session has an improvised dialog (``Ses0nF_impro01``) and a scripted one
    (``Ses0nM_script01_1``); utterances alternate F/M speakers and take labels from
    :data:`IEMOCAP_LABEL_CYCLE`. Evaluation files have the real ``%`` header, TAB-separated
    summary lines, ``C-``/``A-`` evaluator lines and blank lines; ``Categorical/`` holds
    per-evaluator files that are not label sources. ``folder_name="IEMOCAP"`` gives the
    folder name torchaudio expects.
    """
    corpus = Path(root) / folder_name
    label_index = 0
    for session in sessions:
        # the folder of per-evaluator files exists even where a dialog has none
        (corpus / f"Session{session}" / "dialog" / "EmoEvaluation" / "Categorical").mkdir(
            parents=True, exist_ok=True
        )
        for dialog in (f"Ses0{session}F_impro01", f"Ses0{session}M_script01_1"):
            turns, start = [], 2.0
            for number in range(utterances_per_dialog):
                gender = "FM"[number % 2]
                utterance = f"{dialog}_{gender}{number // 2:03d}"
                label = IEMOCAP_LABEL_CYCLE[label_index % len(IEMOCAP_LABEL_CYCLE)]
                label_index += 1
                write_tone(
                    iemocap.audio_path(corpus, session, dialog, utterance),
                    seconds,
                    16000,
                    180 + 15 * number,
                )
                turns.append((start, start + 1.9456, utterance, label))
                start += 2.5
            evaluation = []
            for begin, end, utterance, label in turns:
                category = _CATEGORY_NAMES[label]
                categorical = [
                    ("C-E2", [category], ""),
                    ("C-E3", [category, "Other"], "tense"),
                    ("C-F1", [category], ""),
                ]
                dimensional = [("A-E3", (3, 2, 2)), ("A-F1", (2, 3, 3))]
                evaluation.append(
                    iemocap.turn_lines(
                        utterance, label, begin, end, (2.5, 2.5, 2.5), categorical, dimensional
                    )
                )
            iemocap.write_evaluation(corpus, session, dialog, evaluation)
            iemocap.write_categorical_file(
                corpus, session, dialog, "e2", [(t[2], _CATEGORY_NAMES[t[3]]) for t in turns]
            )
            iemocap.write_transcription(
                corpus, session, dialog, [(t[2], t[0], t[1], "Excuse me.") for t in turns]
            )
    return corpus


# ---------------------------------------------------------------------------------------
# LJSpeech, LibriTTS, VCTK

_LJ_LINES = (
    ("Printing, in the only sense with which we are at present concerned,",) * 2,
    ('He said "the 1st of them" was fine;', 'He said "the first of them" was fine;'),
    ("in 1813 it was Mr. Smith's", "in eighteen thirteen it was Mister Smith's"),
    ("the ''Times'' printed it", "the ''Times'' printed it"),
)


def iemocap_subset(source: str | os.PathLike, root: str | os.PathLike, per_class: int = 3) -> Path:
    """An IEMOCAP-layout copy of ``source`` keeping each dialog's first ``per_class`` turns of
    every label (the evaluation files rewritten by the layout writer, the audio linked).

    The embedded demo's EmoDB set cut this way (3 takes x 4 classes x 10 actors, 120 of 339
    clips) keeps every session, speaker and class, so a recipe's emotion stage runs in a third
    of the time. Returns ``root``.
    """
    source, root = Path(source), Path(root)
    for evaluation in sorted(source.glob("Session*/dialog/EmoEvaluation/*.txt")):
        session = int(evaluation.parts[-4].removeprefix("Session"))
        turns, current = [], []
        for line in evaluation.read_text().splitlines()[2:]:  # after the header + blank line
            current.append(line)
            if not line:
                turns.append(current)
                current = []
        kept, counts = [], {}
        for turn in turns:
            utterance, label = turn[0].split("\t")[1:3]
            counts[label] = counts.get(label, 0) + 1
            if counts[label] <= per_class:
                kept.append(turn)
                audio = iemocap.audio_path(source, session, evaluation.stem, utterance)
                for clip in audio.parent.glob(f"{utterance}.*"):
                    target = root / clip.relative_to(source)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(clip)
        iemocap.write_evaluation(root, session, evaluation.stem, kept)
    return root


def make_ljspeech_tree(
    root: str | os.PathLike, num_utterances: int = 4, seconds: float = 0.3, sample_rate: int = 22050
) -> Path:
    """``LJSpeech-1.1/metadata.csv`` (``id|raw|normalized``, no header, quotes inside text)
    + ``LJSpeech-1.1/wavs/LJ001-NNNN.wav`` at 22,050 Hz."""
    corpus = Path(root) / ljspeech.FOLDER
    rows = []
    for number in range(1, num_utterances + 1):
        utterance = f"LJ001-{number:04d}"
        raw, normalized = _LJ_LINES[(number - 1) % len(_LJ_LINES)]
        write_tone(ljspeech.audio_path(corpus, utterance), seconds, sample_rate, 200 + 10 * number)
        rows.append((utterance, raw, normalized))
    ljspeech.write_metadata(corpus, rows)
    (corpus / "README").write_text("LJ Speech Dataset (synthetic fixture)\n")
    return corpus


def make_libritts_tree(
    root: str | os.PathLike,
    subsets: tuple[str, ...] = ("train-clean-100", "dev-clean"),
    speakers_per_subset: int = 2,
    utterances_per_chapter: int = 2,
    seconds: float = 0.3,
    sample_rate: int = 24000,
) -> Path:
    """``LibriTTS/<subset>/<speaker>/<chapter>/<spk>_<chap>_NNNNNN_NNNNNN.wav`` with
    ``.normalized.txt`` / ``.original.txt`` beside each, chapter ``.book.tsv`` / ``.trans.tsv``
    and a top-level ``SPEAKERS.txt``."""
    rng = random.Random(2)
    corpus = Path(root) / libritts.FOLDER
    speaker_lines = []
    speaker_id, chapter_id = 19, 198
    for subset in subsets:
        for _ in range(speakers_per_subset):
            rows = []
            for number in range(utterances_per_chapter):
                stem = libritts.utterance_id(speaker_id, chapter_id, 0, number)
                write_tone(
                    libritts.audio_path(corpus, subset, speaker_id, chapter_id, stem),
                    seconds,
                    sample_rate,
                    210 + 10 * number,
                )
                normalized = _sentence(rng).capitalize() + "."
                libritts.write_texts(
                    corpus, subset, speaker_id, chapter_id, stem, normalized.upper(), normalized
                )
                rows.append((stem, normalized.upper(), normalized))
            libritts.write_chapter_tables(corpus, subset, speaker_id, chapter_id, rows)
            gender = "F" if speaker_id % 2 else "M"
            speaker_lines.append(f"{speaker_id:<5}| {gender} | {subset:<16} | Reader {speaker_id}")
            speaker_id, chapter_id = speaker_id + 7, chapter_id + 1
    libritts.write_speakers_file(corpus, speaker_lines)
    return corpus


def make_vctk_tree(
    root: str | os.PathLike,
    speakers: tuple[str, ...] = ("p225", "p226"),
    utterances_per_speaker: int = 2,
    seconds: float = 0.3,
    sample_rate: int = 48000,
    speaker_without_text: str | None = "p315",
) -> Path:
    """``VCTK-Corpus-0.92/wav48_silence_trimmed/<spk>/<spk>_NNN_mic{1,2}.flac`` + ``txt/<spk>/<spk>_NNN.txt``.

    ``speaker_without_text`` (like p315 in the release) has audio but no ``txt/`` folder.
    """
    rng = random.Random(3)
    corpus = Path(root) / vctk.FOLDER
    all_speakers = list(speakers) + ([speaker_without_text] if speaker_without_text else [])
    info = []
    for index, speaker in enumerate(all_speakers):
        for number in range(1, utterances_per_speaker + 1):
            for microphone in ("mic1", "mic2"):
                write_tone(
                    vctk.audio_path(corpus, speaker, number, microphone),
                    seconds,
                    sample_rate,
                    230 + 10 * number,
                )
            if speaker != speaker_without_text:
                vctk.write_text(corpus, speaker, number, _sentence(rng).capitalize() + ".")
        info.append(f"{speaker}  {23 + index}  {'FM'[index % 2]}    English    Southern  England")
    vctk.write_speaker_info(corpus, info)
    (corpus / "README.txt").write_text("CSTR VCTK Corpus 0.92 (synthetic fixture)\n")
    return corpus


def make_speech_commands_tree(
    root: str | os.PathLike,
    words: tuple[str, ...] = ("no", "yes", "zero"),
    speakers: tuple[str, ...] = ("0a2b400e", "0b40aa8e", "0c2ca723", "0d82fd99"),
    takes: int = 2,
    seconds: float = 0.3,
) -> Path:
    """``SpeechCommands/<word>/<speaker>_nohash_<k>.wav`` + ``validation_list.txt`` /
    ``testing_list.txt`` + ``_background_noise_/`` (a noise recording and its README).

    Speakers are split as the release splits them, whole: the second-to-last speaker's clips
    are listed for validation, the last speaker's for testing, the others train. Each word
    is a tone of its own pitch.
    """
    corpus = Path(root) / speech_commands.FOLDER
    held_out: dict[str, list[str]] = {"validation": [], "testing": []}
    for index, word in enumerate(words):
        for position, speaker in enumerate(speakers):
            for number in range(takes):
                relative = speech_commands.clip(word, speaker, number)
                write_tone(
                    speech_commands.audio_path(corpus, relative),
                    seconds,
                    16000,
                    200 + 60 * index + 5 * number,
                )
                if position == len(speakers) - 2:
                    held_out["validation"].append(relative)
                elif position == len(speakers) - 1:
                    held_out["testing"].append(relative)
    for split, clips in held_out.items():
        speech_commands.write_split_list(corpus, split, clips)
    noise = corpus / speech_commands.BACKGROUND_NOISE
    write_tone(noise / "white_noise.wav", 1.0, 16000, 3000.0)
    (noise / "README.md").write_text("Background noise recordings (synthetic fixture)\n")
    return corpus


def speech_commands_subset(
    source: str | os.PathLike, root: str | os.PathLike, takes: int = 8
) -> Path:
    """A Speech Commands-layout copy of ``source`` keeping the takes ``0 .. takes - 1`` of
    every (word, speaker) (the audio linked, both split lists filtered to match).

    The embedded demo's spoken digits cut to 8 takes keep every word, speaker and split (480
    of 3,000 clips), so a keyword probe runs in a sixth of the time. Returns
    ``root/SpeechCommands``.
    """
    source, corpus = Path(source), Path(root) / speech_commands.FOLDER
    kept = set()
    for audio in sorted(source.glob(f"*/*{speech_commands.SEPARATOR}*")):
        number = audio.stem.rpartition(speech_commands.SEPARATOR)[2]
        if speech_commands.speaker_of(audio.stem) and int(number) < takes:
            target = corpus / audio.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(audio.resolve())
            kept.add(f"{audio.parent.name}/{audio.stem}")
    for split, name in speech_commands.LISTS.items():
        listed = [line.strip().removesuffix(".wav") for line in (source / name).read_text().split()]
        speech_commands.write_split_list(corpus, split, [clip for clip in listed if clip in kept])
    return corpus


def make_folder_tree(
    root: str | os.PathLike,
    labels: tuple[str, ...] = ("no", "yes"),
    files_per_label: int = 2,
    seconds: float = 0.3,
) -> Path:
    """A user folder ``<root>/<label>/<label>_N.wav``: one sub-folder per class label."""
    root = Path(root)
    for index, label in enumerate(labels):
        for number in range(files_per_label):
            write_tone(
                folder.audio_path(root, label, f"{label}_{number}.wav"),
                seconds,
                16000,
                200 + 50 * index,
            )
    return root


def small_hubert_pretrain_reference(
    channels: int,
    embed_dim: int,
    num_layers: int,
    ffn_dim: int,
    num_classes: int,
    dropout: float = 0.0,
    final_dim: int = 256,
):
    """A reduced ``torchaudio.models.hubert_pretrain_base()`` for parity tests and benchmarks.

    HuBERT Base's conv strides/kernels and post-LN layout at ``channels``/``embed_dim`` width
    and ``num_layers`` depth, 4 heads, static span masking (p 0.8, length 10), feature
    gradient scale 0.1, no layer drop. ``dropout`` sets every dropout of the encoder.
    """
    import torchaudio

    return torchaudio.models.hubert_pretrain_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=[(channels, 10, 5)]
        + [(channels, 3, 2)] * 4
        + [(channels, 2, 2)] * 2,
        extractor_conv_bias=False,
        encoder_embed_dim=embed_dim,
        encoder_projection_dropout=dropout,
        encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4,
        encoder_num_layers=num_layers,
        encoder_num_heads=4,
        encoder_attention_dropout=dropout,
        encoder_ff_interm_features=ffn_dim,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=dropout,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        mask_prob=0.8,
        mask_selection="static",
        mask_other=0.0,
        mask_length=10,
        no_mask_overlap=False,
        mask_min_space=1,
        mask_channel_prob=0.0,
        mask_channel_selection="static",
        mask_channel_other=0.0,
        mask_channel_length=10,
        no_mask_channel_overlap=False,
        mask_channel_min_space=1,
        skip_masked=False,
        skip_nomask=False,
        num_classes=num_classes,
        final_dim=final_dim,
        feature_grad_mult=0.1,
    )


def write_class_problem(
    root: str | os.PathLike,
    num_classes: int,
    num_utterances: int,
    *,
    durations: tuple[float, float] = (0.4, 0.8),
    spread: float = 0.15,
    sample_rate: int = 16000,
    seed: int = 0,
) -> list[dict]:
    """A generated classification corpus of harmonic "voices" with overlapping spectra.

    Each class has three formant centres and a pitch; each utterance draws its pitch,
    formants (within ``±spread``), level, noise and duration at random, so classes
    overlap and a classifier has to learn. Rows (``id``, ``audio``, ``duration``,
    ``sample_rate``, ``label`` = ``c<k>``) cycle through the classes; files are
    ``root/u<i>.wav``.
    """
    generator = np.random.default_rng(seed)
    formants = generator.uniform(300, 3500, (num_classes, 3))
    pitches = generator.uniform(90, 250, num_classes)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(num_utterances):
        label = index % num_classes
        num_samples = int(generator.uniform(*durations) * sample_rate)
        time = np.arange(num_samples) / sample_rate
        pitch = pitches[label] * generator.uniform(0.85, 1.15)
        centres = formants[label] * generator.uniform(1 - spread, 1 + spread, 3)
        wav = np.zeros(num_samples)
        for harmonic in np.arange(pitch, 7000, pitch):
            gain = np.exp(-(((harmonic - centres) / 250.0) ** 2)).sum() + 0.05
            wav += gain * np.sin(2 * np.pi * harmonic * time + generator.uniform(0, 2 * np.pi))
        wav *= generator.uniform(0.05, 0.5) / np.abs(wav).max()
        wav += generator.normal(0, generator.uniform(0.005, 0.05), num_samples)
        path = root / f"u{index}.wav"
        soundfile.write(path, wav.astype(np.float32), sample_rate)
        rows.append(
            {
                "id": f"u{index}",
                "audio": str(path),
                "duration": num_samples / sample_rate,
                "sample_rate": sample_rate,
                "label": f"c{label}",
            }
        )
    return rows
