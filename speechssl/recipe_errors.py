"""How a recipe meets bad input: checked before any work, ended in one line.

A recipe that discovers a wrong corpus path after an hour of pre-training has wasted the
hour; one that answers a missing file with a Hydra traceback has buried the one line that
matters. :func:`check_source_folders` runs at a recipe's start (every ``*.src`` the run
will read must be a folder), and :func:`exit_on_bad_input` turns a ``ValueError`` or
``FileNotFoundError`` (bad corpus layout, unreadable audio, unknown label, wrong option
value) into ``<recipe>: error: <message>`` on stderr and exit code 1. Anything else is a
bug and keeps its traceback.

Example:
    >>> check_source_folders({"emotion.src": "."})  # a folder: nothing happens
    >>> check_source_folders({"emotion.src": "/no/such/folder"})
    Traceback (most recent call last):
        ...
    ValueError: emotion.src: folder not found: /no/such/folder
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

__all__ = ["check_source_folders", "exit_on_bad_input"]

Result = TypeVar("Result")


def check_source_folders(sources: Mapping[str, str | os.PathLike | None]) -> None:
    """Raise ``ValueError`` naming the first option whose folder does not exist.

    Args:
        sources: option name (as the user types it, e.g. ``"speaker.src"``) -> path;
            ``None`` entries are skipped (a source the run does not use).
    """
    for option, path in sources.items():
        if path is not None and not os.path.isdir(path):
            raise ValueError(f"{option}: folder not found: {path}")


def exit_on_bad_input(recipe: str, function: Callable[..., Result], *args, **kwargs) -> Result:
    """``function(*args, **kwargs)``; bad input ends the process with one stderr line.

    ``ValueError`` (which :class:`speechssl.audio.AudioError` is) and ``FileNotFoundError``
    print ``<recipe>: error: <message on one line>`` and exit with code 1; other
    exceptions propagate unchanged.
    """
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError) as error:
        print(f"{recipe}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(1)
