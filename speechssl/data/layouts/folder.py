"""A user's own labelled audio: a ``<root>/<label>/<file>`` folder or a ``path,label`` CSV.

Read by :mod:`speechssl.data.prepare.folder` (``speechssl prepare folder|csv``) and by
``recipes/finetune`` (``data.train=...``).

Example:
    >>> import tempfile
    >>> out = write_labelled_csv(tempfile.mkdtemp() + "/train.csv", [("a.wav", "yes")])
    >>> out.read_text().splitlines()
    ['path,label', 'a.wav,yes']
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["audio_path", "write_labelled_csv"]


def audio_path(root: str | os.PathLike, label: str, name: str) -> Path:
    """``root/<label>/<name>``: one sub-folder per class label."""
    return Path(root) / label / name


def write_labelled_csv(path: str | os.PathLike, rows: Iterable[Sequence[str]]) -> Path:
    """Write a ``path,label`` CSV (a header, then one ``(path, label)`` row per file, in
    the ``csv`` module's quoting); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path
