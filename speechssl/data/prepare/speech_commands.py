"""Google Speech Commands: ``SpeechCommands/<word>/<speaker>_nohash_<k>.wav`` + split lists.

The layout SUPERB keyword spotting reads (v0.01 or v0.02 as released, or the embedded
demo's spoken digits). Writes ``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl``: ``dev``
holds the clips ``validation_list.txt`` names, ``test`` those of ``testing_list.txt``,
``train`` every other clip. Rows carry ``label`` = the word folder, ``speaker`` = the file
name before ``_nohash_`` and ``split``. The lists name ``.wav`` files; a clip stored in
another audio format under the same stem (``.opus``, see ``common.resolve_audio``) stands
in for it. ``_background_noise_`` (long noise recordings, no words) is not read. A clip
both lists name is left out (``conflicting-split``), so no held-out clip trains.

The root is ``SRC`` itself or ``SRC/SpeechCommands``, ``SRC/speech_commands_v0.0[12]`` or
``SRC/SpeechCommands/speech_commands_v0.0[12]`` (torchaudio's folder).

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_speech_commands_tree
    >>> from speechssl.data.prepare import prepare
    >>> root = make_speech_commands_tree(tempfile.mkdtemp())
    >>> summary = prepare("speech_commands", root, tempfile.mkdtemp())
    >>> sorted(summary["manifests"])
    ['dev', 'test', 'train']
"""

from __future__ import annotations

from pathlib import Path

from speechssl.data.layouts import speech_commands
from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    audio_files,
    find_root,
    read_text,
    resolve_audio,
)

LAYOUT = "SpeechCommands/<word>/<speaker>_nohash_<k>.wav + validation_list.txt, testing_list.txt"
# list file -> the manifest its clips go to
LIST_SPLITS = {"validation": "dev", "testing": "test"}
ROOT_NAMES = [
    "SpeechCommands",
    "speech_commands_v0.02",
    "speech_commands_v0.01",
    "SpeechCommands/speech_commands_v0.02",
    "SpeechCommands/speech_commands_v0.01",
]


def _is_root(path: Path) -> bool:
    return any(
        speech_commands.SEPARATOR in audio.name
        for audio in audio_files(path, "*/*")
        if audio.parent.name != speech_commands.BACKGROUND_NOISE
    )


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "speech_commands",
        ROOT_NAMES,
        _is_root,
        f"no <word>/<speaker>_nohash_<k> audio under {Path(src).absolute()} (expected {LAYOUT})",
    )
    listed = _read_lists(root, report)
    on_disk = {}
    for audio in audio_files(root, "*/*", report):
        word = audio.parent.name
        if word == speech_commands.BACKGROUND_NOISE:
            continue
        if not speech_commands.speaker_of(audio.stem):
            report.skip(audio, "unexpected-name", "expected <speaker>_nohash_<k>")
            continue
        on_disk.setdefault(f"{word}/{audio.stem}", audio)
    utterances = []
    # a clip a list names whose audio is absent is reported as missing
    for relative in sorted(set(on_disk) | set(listed)):
        split = listed.get(relative, "train")
        if split is None:
            continue  # in both lists: reported by _read_lists
        word, stem = relative.split("/")
        audio = on_disk.get(relative) or resolve_audio(root / f"{relative}.wav")
        fields = {"label": word, "speaker": speech_commands.speaker_of(stem), "split": split}
        utterances.append(Utterance(split, relative, str(audio), fields))
    return utterances


def _read_lists(root: Path, report: Report) -> dict[str, str | None]:
    """Clip (``<word>/<stem>``) -> ``dev`` or ``test`` from the two lists; ``None`` for a
    clip both name. A line that is no ``<word>/<speaker>_nohash_<k>.wav`` is reported."""
    listed: dict[str, str | None] = {}
    for name, split in LIST_SPLITS.items():
        path = root / speech_commands.LISTS[name]
        if not path.is_file():
            continue
        for line_number, line in enumerate(
            (read_text(path, report, "unreadable-metadata") or "").splitlines(), 1
        ):
            line = line.strip()
            if not line:
                continue
            word, _, file_name = line.partition("/")
            stem = file_name.removesuffix(".wav")
            if not word or "/" in file_name or not speech_commands.speaker_of(stem):
                report.skip(path, "malformed-line", f"line {line_number}: {line[:120]}")
                continue
            relative = f"{word}/{stem}"
            if listed.get(relative, split) != split:
                detail = f"line {line_number}: {relative} is in both split lists"
                report.skip(path, "conflicting-split", detail)
                listed[relative] = None
            elif relative not in listed:
                listed[relative] = split
    return listed


PREPARER = Preparer("speech_commands", collect, LAYOUT)
