"""VCTK 0.92: ``VCTK-Corpus-0.92/wav48_silence_trimmed/<spk>/<spk>_NNN_mic{1,2}.flac``.

Each utterance's text is ``txt/<spk>/<spk>_NNN.txt`` (one line); a speaker may have audio
but no ``txt/`` folder (p315 in the release). ``speaker-info.txt`` is a space-aligned
table. Read by :mod:`speechssl.data.prepare.vctk`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "VCTK-Corpus-0.92"
    >>> audio_path(corpus, "p225", 1, "mic2").relative_to(corpus).as_posix()
    'wav48_silence_trimmed/p225/p225_001_mic2.flac'
    >>> write_text(corpus, "p225", 1, "Please call Stella.").read_text()
    'Please call Stella.\\n'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = ["FOLDER", "SPEAKER_INFO_HEADER", "audio_path", "write_speaker_info", "write_text"]

FOLDER = "VCTK-Corpus-0.92"
SPEAKER_INFO_HEADER = "ID  AGE  GENDER  ACCENTS  REGION COMMENTS "


def audio_path(
    corpus: str | os.PathLike, speaker: str, number: int, microphone: str, suffix: str = ".flac"
) -> Path:
    """``corpus/wav48_silence_trimmed/<spk>/<spk>_NNN_<microphone><suffix>``."""
    return (
        Path(corpus)
        / "wav48_silence_trimmed"
        / speaker
        / f"{speaker}_{number:03d}_{microphone}{suffix}"
    )


def write_text(corpus: str | os.PathLike, speaker: str, number: int, text: str) -> Path:
    """``corpus/txt/<spk>/<spk>_NNN.txt`` holding ``text`` and a newline."""
    return write_lines(Path(corpus) / "txt" / speaker / f"{speaker}_{number:03d}.txt", [text])


def write_speaker_info(corpus: str | os.PathLike, lines: Iterable[str]) -> Path:
    """``corpus/speaker-info.txt``: the header, then one line per speaker."""
    return write_lines(Path(corpus) / "speaker-info.txt", [SPEAKER_INFO_HEADER, *lines])
