"""LJSpeech: ``LJSpeech-1.1/metadata.csv`` + ``LJSpeech-1.1/wavs/<id>.wav``.

``metadata.csv`` has no header; each line is ``<id>|<raw text>|<normalized text>``,
with quotes inside the text left as they are (no CSV quoting). Read by
:mod:`speechssl.data.prepare.ljspeech`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "LJSpeech-1.1"
    >>> audio_path(corpus, "LJ001-0001", ".ogg").relative_to(corpus).as_posix()
    'wavs/LJ001-0001.ogg'
    >>> write_metadata(corpus, [("LJ001-0001", 'He said "1st"', 'He said "first"')]).read_text()
    'LJ001-0001|He said "1st"|He said "first"\\n'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = ["FOLDER", "audio_path", "write_metadata"]

FOLDER = "LJSpeech-1.1"


def audio_path(corpus: str | os.PathLike, utterance_id: str, suffix: str = ".wav") -> Path:
    """``corpus/wavs/<id><suffix>``."""
    return Path(corpus) / "wavs" / f"{utterance_id}{suffix}"


def write_metadata(corpus: str | os.PathLike, rows: Iterable[Sequence[str]]) -> Path:
    """``corpus/metadata.csv`` from ``(id, raw, normalized)`` rows (or the release's
    fields of a line, as read with ``quoting=csv.QUOTE_NONE``)."""
    return write_lines(Path(corpus) / "metadata.csv", ("|".join(row) for row in rows))
