"""Google Speech Commands: ``SpeechCommands/<word>/<speaker>_nohash_<k>.wav`` + split lists.

The release (``speech_commands_v0.01/0.02.tar.gz``, what SUPERB keyword spotting reads)
unpacks to one folder per word, a ``_background_noise_`` folder of long noise recordings,
and ``validation_list.txt`` / ``testing_list.txt`` naming ``<word>/<file>.wav`` one a line
(every other clip trains). A file's speaker is the part of its name before ``_nohash_``;
the release assigns whole speakers to one split. The lists name ``.wav`` whatever the
audio format on disk (the preparer reads the audio file of the same stem). Read by
:mod:`speechssl.data.prepare.speech_commands`.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> corpus = Path(tempfile.mkdtemp()) / "SpeechCommands"
    >>> relative = clip("yes", "0a2b400e", 1)
    >>> relative, audio_path(corpus, relative, ".opus").relative_to(corpus).as_posix()
    ('yes/0a2b400e_nohash_1', 'yes/0a2b400e_nohash_1.opus')
    >>> write_split_list(corpus, "testing", [relative]).read_text()
    'yes/0a2b400e_nohash_1.wav\\n'
    >>> speaker_of("0a2b400e_nohash_1")
    '0a2b400e'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from speechssl.data.layouts._text import write_lines

__all__ = [
    "BACKGROUND_NOISE",
    "FOLDER",
    "LISTS",
    "SEPARATOR",
    "audio_path",
    "clip",
    "speaker_of",
    "write_split_list",
]

FOLDER = "SpeechCommands"
BACKGROUND_NOISE = "_background_noise_"
SEPARATOR = "_nohash_"
# the list files of the release and the split each names; the clips in neither train
LISTS = {"validation": "validation_list.txt", "testing": "testing_list.txt"}


def clip(word: str, speaker: str, number: int) -> str:
    """``<word>/<speaker>_nohash_<number>``: a clip as the lists name it, without extension."""
    return f"{word}/{speaker}{SEPARATOR}{number}"


def speaker_of(stem: str) -> str:
    """The speaker of a clip file stem (``<speaker>_nohash_<k>``); ``""`` for another name."""
    speaker, separator, number = stem.partition(SEPARATOR)
    return speaker if separator and speaker and number.isdigit() else ""


def audio_path(corpus: str | os.PathLike, relative: str, suffix: str = ".wav") -> Path:
    """``corpus/<relative><suffix>`` for a :func:`clip` name."""
    return Path(corpus) / f"{relative}{suffix}"


def write_split_list(corpus: str | os.PathLike, split: str, clips: Iterable[str]) -> Path:
    """``corpus/validation_list.txt`` or ``testing_list.txt`` (``split``: a key of
    :data:`LISTS`) naming each :func:`clip` as ``<word>/<file>.wav``, in the given order."""
    return write_lines(Path(corpus) / LISTS[split], (f"{name}.wav" for name in clips))
