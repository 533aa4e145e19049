"""A user's own labelled audio and upstream for fine-tuning, read with one-line errors.

``data.train`` / ``data.valid`` / ``data.test`` of the fine-tuning recipe each name one of:

- a CSV file with a ``path,label`` header (relative paths are resolved against the CSV's
  folder; optional ``id``, ``speaker``, ... columns as ``speechssl prepare csv`` reads them);
- a JSONL manifest written by ``speechssl prepare folder|csv`` (rows with ``label``);
- a folder with one sub-folder per label (``<folder>/<label>/*.wav``).

Every audio file is checked before training (decoded when ``verify_audio``). Bad data
stops with one ``ValueError`` line that names the problem: a missing path, an empty CSV,
missing ``path``/``label`` columns, an unreadable audio file (the first one, plus how many
more), a label of valid/test that train never saw, a class without training examples.
Unreadable files are never skipped silently: fix or remove their rows.

:func:`load_upstream` turns ``upstream=`` into an encoder through the one door,
:func:`speechssl.load_encoder` (``fbank``, a preset, a speechssl checkpoint/export, a
torchaudio, fairseq or unilm file, or a Hugging Face folder).

Example:
    >>> import os, tempfile
    >>> from speechssl.testing import write_tone
    >>> root = tempfile.mkdtemp()
    >>> for i in range(4):
    ...     _ = write_tone(f"{root}/t{i}.wav", frequency=300 if i % 2 else 2000)
    >>> with open(f"{root}/train.csv", "w") as f:
    ...     _ = f.write("path,label\\n" + "".join(f"t{i}.wav,{'low' if i % 2 else 'high'}\\n"
    ...                                             for i in range(4)))
    >>> rows = read_labelled(f"{root}/train.csv", "train")
    >>> sorted({row["label"] for row in rows}), os.path.isabs(rows[0]["audio"])
    (['high', 'low'], True)
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from speechssl.data.loaders import DataConfig
from speechssl.data.manifest import read_jsonl, write_jsonl
from speechssl.data.prepare import folder, table
from speechssl.data.prepare.common import Report, check_audio
from speechssl.loading import open_encoder

__all__ = [
    "FinetuneDataConfig",
    "UserData",
    "check_labels",
    "load_upstream",
    "load_user_data",
    "read_labelled",
    "register_finetune_schema",
    "stratified_split",
]

SPLITS = ("train", "valid", "test")


@dataclass
class FinetuneDataConfig(DataConfig):
    """The fine-tuning recipe's ``data`` group: the user's labelled sets + batching.

    Attributes:
        train: CSV (``path,label``), JSONL manifest or label-folder of training audio;
            ``None`` runs the recipe's demo set.
        valid: the same for validation; ``None`` carves a seeded, stratified
            ``valid_fraction`` of ``train`` (a class with one example stays in train).
        test: the same for the final evaluation; ``None`` reports on ``valid``.
        labels: class names in output order; ``None`` takes the sorted training labels.
        valid_fraction: share of ``train`` held out when ``valid`` is not given.
        verify_audio: decode every file before training (False reads headers only).
        (batching fields: see :class:`speechssl.data.loaders.DataConfig`.)
    """

    train: str | None = None
    valid: str | None = None
    test: str | None = None
    labels: list[str] | None = None
    valid_fraction: float = 0.1
    verify_audio: bool = True


def register_finetune_schema() -> None:
    """Store :class:`FinetuneDataConfig` as Hydra's ``data/finetune_data_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="data", name="finetune_data_schema", node=FinetuneDataConfig)


class UserData(NamedTuple):
    """Checked rows (manifest dicts with ``label``) of each set and the class list.

    ``valid_source`` says where the validation rows came from: the given path or
    ``"10% of train"``; ``test`` is empty when no test set was given.
    """

    train: list[dict]
    valid: list[dict]
    test: list[dict]
    labels: list[str]
    valid_source: str


# ---------------------------------------------------------------------------------------
# reading one set


def read_labelled(
    source: str | os.PathLike, name: str = "train", verify_audio: bool = True, workers: int = 4
) -> list[dict]:
    """Rows ``{"id", "audio", "duration", "sample_rate", "label", ...}`` of a CSV, a JSONL
    manifest or a label folder, every audio file checked.

    Args:
        source: the CSV / JSONL file or the folder.
        name: the set's name (``train``, ``valid``, ``test``) for error messages.
        verify_audio: decode every file (False: headers only).
        workers: threads checking audio (libsndfile releases the GIL).

    Raises:
        ValueError: one line naming the problem and the file.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise ValueError(f"data.{name}: {path} does not exist")
    path = path.resolve()
    if path.is_dir():
        listed = _read_folder(path, name)
    elif path.suffix.lower() in (".jsonl", ".json"):
        listed = _read_manifest(path, name)
    else:
        listed = _read_csv(path, name)
    return _check_audio(listed, path, name, verify_audio, workers)


def _read_csv(path: Path, name: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            header = next(csv.reader(file), None)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"data.{name}: cannot read {path}: {str(error).splitlines()[0]}") from None
    if not header:
        raise ValueError(f"data.{name}: {path} is empty; it needs a 'path,label' header and rows")
    columns = [column.strip() for column in header]
    missing = [column for column in ("path", "label") if column not in columns]
    if missing:
        raise ValueError(
            f"data.{name}: {path} has no {' or '.join(repr(c) for c in missing)} column "
            f"(header: {','.join(columns)}); expected a 'path,label' header"
        )
    report = Report()
    try:
        utterances = table.collect(path, report)
    except ValueError as error:  # e.g. a header without rows
        raise ValueError(f"data.{name}: {error}") from None
    _raise_on_skipped(report, path, name)
    rows = []
    for utterance in utterances:
        if "label" not in utterance.fields:
            raise ValueError(
                f"data.{name}: {path}: the row of {utterance.audio} has an empty label"
            )
        rows.append({"id": utterance.id, "audio": utterance.audio, **utterance.fields})
    return rows


def _read_folder(path: Path, name: str) -> list[dict]:
    report = Report()
    try:
        utterances = folder.collect(path, report)
    except ValueError as error:
        raise ValueError(f"data.{name}: {error}") from None
    if report.skipped:
        # audio beside the class folders belongs to no class: tell, but the rest is usable
        print(
            f"warning: data.{name}: {len(report.skipped)} audio files directly in {path} are "
            f"ignored (put them in a <label>/ sub-folder), e.g. {report.skipped[0]['path']}",
            file=sys.stderr,
        )
    return [{"id": u.id, "audio": u.audio, **u.fields} for u in utterances]


def _read_manifest(path: Path, name: str) -> list[dict]:
    skipped: list[dict] = []
    rows = list(read_jsonl(path, skipped=skipped))
    if skipped:
        first = skipped[0]
        raise ValueError(
            f"data.{name}: {path}: {len(skipped)} malformed lines, first: {first.get('detail', '')}"
        )
    if not rows:
        raise ValueError(f"data.{name}: {path} has no rows")
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("audio"), str) or not row["audio"]:
            raise ValueError(f"data.{name}: {path} line {number} has no 'audio' path")
        if row.get("label") in (None, ""):
            raise ValueError(f"data.{name}: {path} line {number} ({row['audio']}) has no 'label'")
        row.setdefault("id", Path(row["audio"]).stem)
        row["label"] = str(row["label"])
    return rows


def _raise_on_skipped(report: Report, path: Path, name: str) -> None:
    if not report.skipped:
        return
    first = report.skipped[0]
    more = f" (and {len(report.skipped) - 1} more)" if len(report.skipped) > 1 else ""
    reason = first["reason"].replace("-", " ")
    raise ValueError(f"data.{name}: {path}: {reason}: {first['detail'] or first['path']}{more}")


def _check_audio(
    rows: list[dict], source: Path, name: str, verify_audio: bool, workers: int
) -> list[dict]:
    """Fill ``duration``/``sample_rate`` from the files; one error for unusable audio."""
    if not rows:
        raise ValueError(f"data.{name}: {source} lists no audio files")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        checks = list(pool.map(lambda row: check_audio(row["audio"], verify_audio), rows))
    failed = [(row, check) for row, check in zip(rows, checks) if check.reason]
    if failed:
        row, check = failed[0]
        more = f" (and {len(failed) - 1} more unusable files)" if len(failed) > 1 else ""
        detail = f": {check.detail}" if check.detail else ""
        verb = (
            "does not exist"
            if check.reason == "missing"
            else f"is unusable ({check.reason}{detail})"
        )
        raise ValueError(
            f"data.{name}: audio file {row['audio']} listed in {source} {verb}{more}; "
            "fix or remove it"
        )
    checked = []
    for row, check in zip(rows, checks):
        duration = round(check.num_samples / check.sample_rate, 6)
        checked.append({**row, "duration": duration, "sample_rate": check.sample_rate})
    return checked


# ---------------------------------------------------------------------------------------
# splitting and label checks


def stratified_split(
    rows: list[dict], fraction: float = 0.1, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """``(train, valid)``: ``round(fraction * n)`` rows of each class held out (at least
    one, at most ``n - 1``), seeded.

    Written by hand because sklearn's ``train_test_split(stratify=...)`` refuses classes
    with one example and sets smaller than the number of classes; here every class keeps
    at least one training row, so a singleton class simply has no validation row.
    Both outputs keep the input order.

    Example:
        >>> rows = [{"label": "a"}] * 10 + [{"label": "b"}] * 10 + [{"label": "c"}]
        >>> train, valid = stratified_split(rows, 0.2, seed=0)
        >>> len(train), sorted(row["label"] for row in valid)
        (17, ['a', 'a', 'b', 'b'])
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.valid_fraction must be in (0, 1), got {fraction}")
    generator = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_label.setdefault(row["label"], []).append(index)
    held_out: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label]
        # at least one per class with 2+ examples, so every such class is validated
        count = min(max(round(fraction * len(indices)), 1), len(indices) - 1)
        held_out.update(generator.sample(indices, count))
    train = [row for index, row in enumerate(rows) if index not in held_out]
    valid = [row for index, row in enumerate(rows) if index in held_out]
    return train, valid


def check_labels(
    train: list[dict],
    others: dict[str, tuple[list[dict], str]],
    labels: list[str] | None = None,
) -> list[str]:
    """The class list: ``labels`` or the sorted training labels, checked against every set.

    Args:
        train: training rows.
        others: ``{set name: (rows, source)}`` of the evaluation sets.
        labels: an explicit class list (``data.labels``), or None.

    Raises:
        ValueError: fewer than 2 classes; a class without training examples; a label of an
            evaluation set that training never saw (naming the label, the file and the set).
    """
    seen = sorted({row["label"] for row in train})
    if labels is None:
        labels = seen
    else:
        labels = [str(label) for label in labels]
        if len(set(labels)) != len(labels):
            raise ValueError(f"data.labels has duplicates: {labels}")
        outside = [label for label in seen if label not in labels]
        if outside:
            raise ValueError(f"training label {outside[0]!r} is not in data.labels {labels}")
        empty = [label for label in labels if label not in seen]
        if empty:
            raise ValueError(f"class {empty[0]!r} of data.labels has no training example")
    if len(labels) < 2:
        raise ValueError(f"the training data has only the label(s) {labels}; a classifier needs 2+")
    known = set(labels)
    for name, (rows, source) in others.items():
        for row in rows:
            if row["label"] not in known:
                raise ValueError(
                    f"label {row['label']!r} of {row['audio']} in data.{name} ({source}) never "
                    f"appears in the training data (classes: {', '.join(labels)})"
                )
    return labels


def load_user_data(
    config: FinetuneDataConfig, out_dir: str | os.PathLike, seed: int = 0
) -> UserData:
    """Read, check and split the sets of ``config``; write ``out_dir/{train,valid,test}.jsonl``
    and ``out_dir/labels.json``.

    Raises:
        ValueError: bad data (one line, see the module docstring).
    """
    if config.train is None:
        raise ValueError("data.train is not set: give a CSV, a JSONL manifest or a label folder")
    read = {
        name: read_labelled(getattr(config, name), name, config.verify_audio)
        for name in SPLITS
        if getattr(config, name) is not None
    }
    train = read["train"]
    if "valid" in read:
        valid, valid_source = read["valid"], str(config.valid)
    else:
        train, valid = stratified_split(train, config.valid_fraction, seed)
        valid_source = f"{config.valid_fraction:.0%} of train (stratified, seed {seed})"
    test = read.get("test", [])
    others = {"valid": (valid, valid_source)}
    if test:
        others["test"] = (test, str(config.test))
    if not valid and not test:
        raise ValueError(
            "nothing to evaluate on: every class of data.train has a single example, so no "
            "validation set can be held out; give data.valid or data.test"
        )
    labels = check_labels(train, others, config.labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        if rows:
            write_jsonl(out_dir / f"{name}.jsonl", rows)
    (out_dir / "labels.json").write_text(json.dumps(labels) + "\n")
    return UserData(train, valid, test, labels, valid_source)


# ---------------------------------------------------------------------------------------
# the upstream


def load_upstream(spec: str, seed: int = 0, n_mels: int = 80):
    """``(encoder, kind)`` for an ``upstream=`` value, through :func:`speechssl.load_encoder`
    (every format it opens; ``kind`` is one of :data:`speechssl.loading.KINDS`).

    Raises:
        ValueError: one line, prefixed with ``upstream=<spec>``.
    """
    try:
        encoder, kind = open_encoder(spec, seed=seed, n_mels=n_mels)
    except (ValueError, FileNotFoundError) as error:
        message = " ".join(str(error).split())
        # the door's messages start with the path, which upstream= already names
        path = str(Path(str(spec).strip()).expanduser())
        message = message.removeprefix(f"{path}: ")
        raise ValueError(f"upstream={spec}: {message}") from None
    return encoder, kind
