"""LibriSpeech: ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac``.

Each chapter folder holds ``<speaker>-<chapter>.trans.txt`` (``19-198-0001 TEXT`` lines;
a chapter without it is unlabelled audio); ``SPEAKERS.TXT`` has ``;`` comment lines, then
``19   | F | train-clean-100  | 25.19 | Name`` lines (a name may itself contain ``|``);
``CHAPTERS.TXT`` likewise (``198    | 19   | 25.19 | train-clean-100  | ...`` lines).
Read by :mod:`speechssl.data.prepare.librispeech`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "LibriSpeech"
    >>> audio_path(corpus, "dev-clean", 19, 198, 1).relative_to(corpus).as_posix()
    'dev-clean/19/198/19-198-0001.flac'
    >>> path = write_transcript(corpus, "dev-clean", 19, 198, [("19-198-0001", "A TEXT")])
    >>> path.name, path.read_text()
    ('19-198.trans.txt', '19-198-0001 A TEXT\\n')
    >>> speaker_line(19, "F", "dev-clean", 25.19, "Reader 19")
    '19   | F | dev-clean        | 25.19 | Reader 19'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = [
    "FOLDER",
    "SPEAKERS_HEADER",
    "audio_path",
    "speaker_line",
    "utterance_id",
    "write_chapters_file",
    "write_speakers_file",
    "write_transcript",
]

FOLDER = "LibriSpeech"
# the release's SPEAKERS.TXT starts with ';' comment lines like these
SPEAKERS_HEADER = (
    "; Some of the speakers are listed under more than one SUBSET",
    ";ID  |SEX| SUBSET           |MINUTES| NAME",
)


def utterance_id(speaker: int | str, chapter: int | str, number: int) -> str:
    """``<speaker>-<chapter>-NNNN``."""
    return f"{speaker}-{chapter}-{number:04d}"


def audio_path(
    corpus: str | os.PathLike,
    subset: str,
    speaker: int | str,
    chapter: int | str,
    number: int,
    suffix: str = ".flac",
) -> Path:
    """``corpus/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN<suffix>``."""
    return (
        Path(corpus)
        / subset
        / str(speaker)
        / str(chapter)
        / f"{utterance_id(speaker, chapter, number)}{suffix}"
    )


def write_transcript(
    corpus: str | os.PathLike,
    subset: str,
    speaker: int | str,
    chapter: int | str,
    lines: Iterable[tuple[str, str]],
) -> Path:
    """The chapter's ``<speaker>-<chapter>.trans.txt`` from ``(utterance id, TEXT)`` pairs."""
    folder = Path(corpus) / subset / str(speaker) / str(chapter)
    return write_lines(
        folder / f"{speaker}-{chapter}.trans.txt", (f"{key} {text}" for key, text in lines)
    )


def speaker_line(speaker: int | str, gender: str, subset: str, minutes: float, name: str) -> str:
    """One ``SPEAKERS.TXT`` line in the release's column widths."""
    return f"{speaker!s:<5}| {gender} | {subset:<16} | {minutes:.2f} | {name}"


def write_speakers_file(
    corpus: str | os.PathLike, lines: Iterable[str], header: Sequence[str] = SPEAKERS_HEADER
) -> Path:
    """``corpus/SPEAKERS.TXT``: the ``;`` ``header`` lines, then ``lines`` (as written by
    :func:`speaker_line`, or copied verbatim from the release)."""
    return write_lines(Path(corpus) / "SPEAKERS.TXT", [*header, *lines])


def write_chapters_file(
    corpus: str | os.PathLike, header: Sequence[str], lines: Iterable[str]
) -> Path:
    """``corpus/CHAPTERS.TXT``: the release's ``;`` ``header`` lines, then its chapter ``lines``."""
    return write_lines(Path(corpus) / "CHAPTERS.TXT", [*header, *lines])
