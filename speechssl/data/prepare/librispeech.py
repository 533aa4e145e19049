"""LibriSpeech: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac``.

Each chapter folder holds ``<speaker>-<chapter>.trans.txt`` ("19-198-0001 TEXT" lines);
a chapter without that file is unlabelled audio (rows without ``text``, for pre-training),
and audio may be stored in any format ``common.audio_extensions()`` lists (the embedded
demo keeps Ogg Opus). ``SPEAKERS.TXT`` (";" comments, then "19 | F | train-clean-100 | 25.19 | Name") gives the
gender. One manifest per subset found: ``train-clean-100.jsonl``, ``dev-clean.jsonl``, ...

Example:
    >>> import tempfile
    >>> from speechssl.testing import make_librispeech_tree
    >>> from speechssl.data.prepare import prepare
    >>> root = make_librispeech_tree(tempfile.mkdtemp())
    >>> summary = prepare("librispeech", root, tempfile.mkdtemp())
    >>> sorted(summary["manifests"])
    ['dev-clean', 'train-clean-100']
"""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.data.prepare.common import (
    Preparer,
    Report,
    Utterance,
    audio_files,
    find_root,
    glob_files,
    read_text,
    try_read_text,
)

LAYOUT = "LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac"
_UTTERANCE_ID = re.compile(r"^\d+-\d+-\d+$")


def _subsets(root: Path, report: Report | None = None) -> list[Path]:
    """Sub-folders that hold ``<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac`` (or other
    audio) or ``*.trans.txt``; folders that cannot be listed go to ``report`` (None: only
    probing the layout). Audio named otherwise (VoxCeleb1's ``wav/id10001/<video>/00001.wav``)
    makes no subset, so another corpus's folder is refused rather than read as LibriSpeech."""
    return [
        child
        for child in glob_files(root, "*", report, kind="dir")
        if any(map(_is_utterance_audio, audio_files(child, "*/*/*", report)))
        or glob_files(child, "*/*/*.trans.txt")
    ]


def _is_utterance_audio(path: Path) -> bool:
    """``<speaker>/<chapter>/<speaker>-<chapter>-NNNN.<ext>``, all numbers."""
    speaker, chapter = path.parent.parent.name, path.parent.name
    return bool(_UTTERANCE_ID.match(path.stem)) and path.stem.startswith(f"{speaker}-{chapter}-")


def read_speakers_file(path: Path, report: Report) -> dict[str, str]:
    """Speaker id -> gender from a LibriSpeech/LibriTTS ``SPEAKERS.TXT`` ('|'-separated).

    Names may themselves contain '|' (``60 | M | train-clean-100 | 20.18 | |CBW|Simon``),
    so only the first four separators split.
    """
    genders: dict[str, str] = {}
    text = read_text(path, report, "unreadable-metadata")
    for line_number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        parts = [part.strip() for part in line.split("|", 4)]
        if len(parts) < 3 or not parts[0] or parts[1] not in ("F", "M"):
            report.skip(path, "malformed-line", f"line {line_number}: {line.strip()[:80]}")
            continue
        genders[parts[0]] = parts[1]
    return genders


def collect(src, report: Report) -> list[Utterance]:
    root = find_root(
        report,
        src,
        "librispeech",
        ["LibriSpeech"],
        lambda path: bool(_subsets(path)),
        f"no subset folder with <speaker>/<chapter>/<speaker>-<chapter>-NNNN audio under "
        f"{Path(src).absolute()} (expected {LAYOUT})",
    )
    speakers_file = root / "SPEAKERS.TXT"
    genders = read_speakers_file(speakers_file, report) if speakers_file.is_file() else {}
    utterances = []
    for subset in _subsets(root, report):
        for chapter in glob_files(subset, "*/*", kind="dir"):  # unreadable ones: reported above
            speaker = chapter.parent.name
            transcripts, error = _read_transcripts(chapter, report)
            flacs = {path.stem: path for path in audio_files(chapter, "*")}
            unlabelled = transcripts is None
            # an utterance the transcript lists whose flac is absent is reported as missing
            for utterance_id in sorted(set(flacs) | set(transcripts or {})):
                audio = flacs.get(utterance_id, chapter / f"{utterance_id}.flac")
                if error:
                    report.skip(audio, "unreadable-transcript", error)
                    continue
                if unlabelled:
                    fields = {"speaker": speaker}
                elif utterance_id in transcripts:
                    fields = {"speaker": speaker, "text": transcripts[utterance_id]}
                else:
                    report.skip(audio, "no-transcript", f"not in {chapter.name} transcript")
                    continue
                if speaker in genders:
                    fields["gender"] = genders[speaker]
                utterances.append(Utterance(subset.name, utterance_id, str(audio), fields))
    if not utterances and not report.skipped:
        raise ValueError(f"librispeech: no utterances under {root} (expected {LAYOUT})")
    return utterances


def _read_transcripts(chapter: Path, report: Report) -> tuple[dict[str, str] | None, str]:
    """``(utterance id -> text, error)`` of one chapter; ``error`` says why it is unreadable.

    ``None`` when the chapter has no transcript file: its audio is unlabelled.
    """
    path = chapter / f"{chapter.parent.name}-{chapter.name}.trans.txt"
    if not path.is_file():
        return None, ""
    text, error = try_read_text(path)
    if text is None:
        return {}, error
    transcripts = {}
    for line_number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) != 2 or not _UTTERANCE_ID.match(parts[0]) or not parts[1].strip():
            report.skip(path, "malformed-line", f"line {line_number}: {line.strip()[:80]}")
            continue
        transcripts[parts[0]] = parts[1].strip()
    return transcripts, ""


PREPARER = Preparer("librispeech", collect, LAYOUT)
