"""The one text writer of the layouts: folders made, UTF-8, lines ended by newlines."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write ``lines``, each ended by ``\\n``, as UTF-8 (parent folders made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
