"""VoxCeleb1: ``VoxCeleb1/wav/<speaker>/<video>/NNNNN.wav`` + ``iden_split.txt`` + ``veri_test.txt``.

``iden_split.txt`` lines are ``<code> <speaker>/<video>/NNNNN.wav`` (code 1 train, 2 dev,
3 test); ``veri_test.txt`` lines are ``<1|0> <enrol path> <test path>`` (1: same
speaker). Both name ``.wav`` files as the release does, whatever the audio format on disk
(the preparer reads the audio file of the same stem). ``vox1_meta.csv`` is TAB-separated.
Read by :mod:`speechssl.data.prepare.voxceleb1`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "VoxCeleb1"
    >>> relative = utterance("id10001", "1zcIwhmdeo4", 1)
    >>> relative, audio_path(corpus, relative, ".opus").relative_to(corpus).as_posix()
    ('id10001/1zcIwhmdeo4/00001', 'wav/id10001/1zcIwhmdeo4/00001.opus')
    >>> write_identification_split(corpus, [(1, relative)]).read_text()
    '1 id10001/1zcIwhmdeo4/00001.wav\\n'
    >>> write_trials(corpus, [(1, relative, relative)]).read_text()
    '1 id10001/1zcIwhmdeo4/00001.wav id10001/1zcIwhmdeo4/00001.wav\\n'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = [
    "FOLDER",
    "META_HEADER",
    "audio_path",
    "utterance",
    "write_identification_split",
    "write_meta",
    "write_trials",
]

FOLDER = "VoxCeleb1"
META_HEADER = "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"


def utterance(speaker: str, video: str, number: int) -> str:
    """``<speaker>/<video>/NNNNN``: an utterance as the lists name it, without extension."""
    return f"{speaker}/{video}/{number:05d}"


def audio_path(corpus: str | os.PathLike, relative: str, suffix: str = ".wav") -> Path:
    """``corpus/wav/<relative><suffix>`` for an :func:`utterance` name."""
    return Path(corpus) / "wav" / f"{relative}{suffix}"


def write_identification_split(
    corpus: str | os.PathLike, entries: Iterable[tuple[int | str, str]]
) -> Path:
    """``corpus/iden_split.txt`` from ``(code, utterance)`` pairs (code 1/2/3)."""
    return write_lines(
        Path(corpus) / "iden_split.txt", (f"{code} {name}.wav" for code, name in entries)
    )


def write_trials(corpus: str | os.PathLike, trials: Iterable[tuple[int | str, str, str]]) -> Path:
    """``corpus/veri_test.txt`` from ``(label, enrol utterance, test utterance)`` triples."""
    return write_lines(
        Path(corpus) / "veri_test.txt",
        (f"{label} {enrol}.wav {test}.wav" for label, enrol, test in trials),
    )


def write_meta(corpus: str | os.PathLike, rows: Iterable[tuple[str, str, str, str, str]]) -> Path:
    """``corpus/vox1_meta.csv`` from ``(id, VGGFace1 id, gender, nationality, set)`` rows."""
    return write_lines(
        Path(corpus) / "vox1_meta.csv", [META_HEADER, *("\t".join(row) for row in rows)]
    )
