"""LibriTTS: ``LibriTTS/<subset>/<speaker>/<chapter>/<spk>_<chap>_PPPPPP_SSSSSS.wav``.

Beside each 24 kHz wav lie ``<stem>.original.txt`` and ``<stem>.normalized.txt`` (one
line, no newline); a chapter folder may hold ``<spk>_<chap>.trans.tsv`` and ``.book.tsv``
(``stem\\toriginal\\tnormalized`` lines), and the corpus a ``SPEAKERS.txt`` table. The
stem numbers a paragraph and a sentence within it. Read by
:mod:`speechssl.data.prepare.libritts`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "LibriTTS"
    >>> stem = utterance_id(19, 198, 0, 2)
    >>> audio_path(corpus, "dev-clean", 19, 198, stem).relative_to(corpus).as_posix()
    'dev-clean/19/198/19_198_000000_000002.wav'
    >>> original, normalized = write_texts(corpus, "dev-clean", 19, 198, stem, "2 days", "two days")
    >>> original.name, normalized.read_text()
    ('19_198_000000_000002.original.txt', 'two days')
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = [
    "FOLDER",
    "SPEAKERS_HEADER",
    "audio_path",
    "chapter_dir",
    "utterance_id",
    "write_chapter_tables",
    "write_speakers_file",
    "write_texts",
]

FOLDER = "LibriTTS"
SPEAKERS_HEADER = ";ID  |SEX| SUBSET           | NAME"


def utterance_id(speaker: int | str, chapter: int | str, paragraph: int, sentence: int) -> str:
    """``<speaker>_<chapter>_PPPPPP_SSSSSS``."""
    return f"{speaker}_{chapter}_{paragraph:06d}_{sentence:06d}"


def chapter_dir(
    corpus: str | os.PathLike, subset: str, speaker: int | str, chapter: int | str
) -> Path:
    """``corpus/<subset>/<speaker>/<chapter>``."""
    return Path(corpus) / subset / str(speaker) / str(chapter)


def audio_path(
    corpus: str | os.PathLike,
    subset: str,
    speaker: int | str,
    chapter: int | str,
    stem: str,
    suffix: str = ".wav",
) -> Path:
    """``corpus/<subset>/<speaker>/<chapter>/<stem><suffix>``."""
    return chapter_dir(corpus, subset, speaker, chapter) / f"{stem}{suffix}"


def write_texts(
    corpus: str | os.PathLike,
    subset: str,
    speaker: int | str,
    chapter: int | str,
    stem: str,
    original: str,
    normalized: str,
) -> tuple[Path, Path]:
    """``<stem>.original.txt`` and ``<stem>.normalized.txt`` (the text alone, no newline)."""
    folder = chapter_dir(corpus, subset, speaker, chapter)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{stem}.original.txt", folder / f"{stem}.normalized.txt"
    paths[0].write_text(original, encoding="utf-8")
    paths[1].write_text(normalized, encoding="utf-8")
    return paths


def write_chapter_tables(
    corpus: str | os.PathLike,
    subset: str,
    speaker: int | str,
    chapter: int | str,
    rows: Iterable[tuple[str, str, str]],
) -> tuple[Path, Path]:
    """The chapter's ``.trans.tsv`` and ``.book.tsv`` from ``(stem, original, normalized)``."""
    folder = chapter_dir(corpus, subset, speaker, chapter)
    lines = ["\t".join(row) for row in rows]
    return (
        write_lines(folder / f"{speaker}_{chapter}.trans.tsv", lines),
        write_lines(folder / f"{speaker}_{chapter}.book.tsv", lines),
    )


def write_speakers_file(corpus: str | os.PathLike, lines: Iterable[str]) -> Path:
    """``corpus/SPEAKERS.txt``: the header, then ``<id>  | <sex> | <subset> | <name>`` lines."""
    return write_lines(Path(corpus) / "SPEAKERS.txt", [SPEAKERS_HEADER, *lines])
