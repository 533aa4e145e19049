"""A user CSV: header with ``path`` and ``label`` or ``text``; optional ``id``, ``speaker``,
``split``, ``session``, ``gender``.

Relative paths are resolved against the CSV's folder. Without a ``split`` column all rows
go to ``all.jsonl``; with one, each split value gets its own manifest (``train.jsonl``, ...).
With ``labels``, rows whose label is outside the set are skipped (``label-not-in-set``).
(The module is not named ``csv.py`` so it cannot shadow the standard library.)

Example:
    >>> import tempfile, os
    >>> from speechssl.testing import write_tone
    >>> from speechssl.data.prepare import prepare
    >>> src = tempfile.mkdtemp()
    >>> _ = write_tone(os.path.join(src, "a.wav"))
    >>> with open(os.path.join(src, "data.csv"), "w") as f:
    ...     _ = f.write("path,label,split\\na.wav,yes,train\\n")
    >>> sorted(prepare("csv", os.path.join(src, "data.csv"), tempfile.mkdtemp())["manifests"])
    ['train']
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from speechssl.data.prepare.common import Preparer, Report, Utterance, resolve_path

LAYOUT = "a CSV file whose header has path and label or text (optional id, speaker, split)"
OPTIONAL_COLUMNS = ("speaker", "split", "session", "gender", "label", "text")
# a split value becomes a file name
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def collect(src, report: Report, labels: set[str] | None = None) -> list[Utterance]:
    table, error = resolve_path(src)
    if table is None:
        raise ValueError(f"csv: cannot resolve {src}: {error}")
    if not table.is_file():
        raise ValueError(f"csv: SRC must be a CSV file, got {table} ({LAYOUT})")
    try:
        with open(table, encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file)
            columns = [name.strip() for name in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"csv: cannot read {table}: {str(error).splitlines()[0]}") from None
    if "path" not in columns or not ({"label", "text"} & set(columns)):
        raise ValueError(
            f"csv: header of {table} has columns {columns}; it needs 'path' and 'label' or 'text'"
        )
    has_split = "split" in columns
    seen: set[str] = set()
    utterances = []
    for line_number, row in enumerate(rows, 2):  # line 1 is the header
        row = {(key or "").strip(): value for key, value in row.items()}
        values = [row.get(name) for name in columns]
        # DictReader puts extra cells under the key "" (None) and fills short rows with None
        if row.get("") is not None or any(value is None for value in values):
            report.skip(table, "malformed-line", f"line {line_number}: wrong number of fields")
            continue
        row = {key: value.strip() for key, value in row.items() if key}
        split = row.get("split", "") if has_split else "all"
        if not row["path"] or not _SPLIT_NAME.match(split):
            report.skip(table, "malformed-line", f"line {line_number}: empty path or bad split")
            continue
        audio = Path(row["path"]).expanduser()
        audio, error = resolve_path(audio if audio.is_absolute() else table.parent / audio)
        if audio is None:  # e.g. a symlink loop
            report.skip(row["path"], "unresolvable-path", f"line {line_number}: {error}")
            continue
        if labels is not None and row.get("label") not in labels:
            report.skip(audio, "label-not-in-set", row.get("label", ""))
            continue
        utterance_id = row.get("id") or _default_id(audio, table.parent)
        if utterance_id in seen:
            report.skip(audio, "duplicate-id", f"line {line_number}: {utterance_id}")
            continue
        seen.add(utterance_id)
        fields = {name: row[name] for name in OPTIONAL_COLUMNS if row.get(name)}
        if "session" in fields and fields["session"].isdigit():
            fields["session"] = int(fields["session"])
        utterances.append(Utterance(split, utterance_id, str(audio), fields))
    if not utterances and not report.skipped:
        raise ValueError(f"csv: {table} has no data rows")
    return utterances


def _default_id(audio: Path, base: Path) -> str:
    """The path relative to the CSV's folder without extension, else the absolute one."""
    try:
        return audio.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        return audio.with_suffix("").as_posix().lstrip("/")


PREPARER = Preparer("csv", collect, LAYOUT, takes_labels=True)
