"""JSONL manifests: one utterance a line.

Every row has ``id``, ``audio`` (absolute path), ``duration`` (seconds) and
``sample_rate``; corpora add ``speaker``, ``label``, ``text``, ``session``, ``split``
where they have them. Rows that a preparer or dataset could not use go to
``skipped.jsonl`` beside the manifest as ``{"path": ..., "reason": ..., "detail": ...}``.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "train.jsonl")
    >>> write_jsonl(path, [{"id": "a", "audio": "/x.wav", "duration": 1.0, "sample_rate": 16000}])
    1
    >>> [row["id"] for row in read_jsonl(path)]
    ['a']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

from speechssl.safe_io import atomic_write, parse_json

REQUIRED_KEYS = ("id", "audio", "duration", "sample_rate")
OPTIONAL_KEYS = ("speaker", "label", "text", "session", "fold", "split", "gender")


class ManifestError(ValueError):
    """A manifest that cannot be read at all (missing file, not JSONL)."""


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as JSON lines atomically (temp file + rename); returns the row count."""
    count = 0
    with atomic_write(path) as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | os.PathLike, skipped: list[dict] | None = None) -> Iterator[dict]:
    """Yield manifest rows. Malformed lines are appended to ``skipped`` (or raise if None)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestError(f"manifest not found: {path}")
    with open(path, encoding="utf-8") as file:
        yield from parse_jsonl(file, path, skipped)


def parse_jsonl(
    lines: Iterable[str], path: str | os.PathLike, skipped: list[dict] | None = None
) -> Iterator[dict]:
    """Rows of manifest ``lines`` already read (``path`` names them in messages), checked as
    :func:`read_jsonl` checks a file's: a caller that needs the bytes too (a digest) reads
    the file once."""
    path = os.fspath(path)
    for line_number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        reason = None
        try:
            row = parse_json(line, f"line {line_number}")
        except ValueError as error:
            reason, detail = "malformed-line", str(error)
        else:
            missing = [key for key in REQUIRED_KEYS if not isinstance(row, dict) or key not in row]
            if missing:
                reason, detail = (
                    "malformed-line",
                    f"line {line_number}: missing {', '.join(missing)}",
                )
        if reason is None:
            yield row
        elif skipped is None:
            raise ManifestError(f"{path}: {detail}")
        else:
            skipped.append({"path": path, "reason": reason, "detail": detail})
