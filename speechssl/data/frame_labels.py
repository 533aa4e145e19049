"""Frame labels (HuBERT targets) on disk: label files beside the manifest, length checks.

HuBERT learns to predict a k-means cluster index for every frame. The labels of a
manifest are stored *beside the manifest* as a fairseq ``.km`` file (one line of
space-separated cluster indices per manifest row) plus a small JSON with the fingerprint
of the k-means model and a digest of the manifest (:func:`label_paths`). Computing them
(k-means fitted on the training split, every split labelled with it) is
:mod:`speechssl.targets`'s job; this module only reads and writes the files, so the data
layer needs no k-means.

Reading labels back (:func:`load_frame_labels`) checks each utterance's label count
against its duration: an utterance whose count differs from ``duration * label_rate`` by
more than ``max_drift_per_second`` frames per second of audio (after ``edge_frames`` for
the analysis window's edges) is reported and dropped, never silently cropped; an empty
line (audio that could not be read when labelling) is dropped and counted too. The kept
rows and their labels feed :func:`speechssl.data.loaders.make_loader` (``frame_labels=``),
whose dataset crops labels together with the audio.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> path = write_label_file(folder / "train.mfcc.km", [np.array([3, 1, 4]), np.array([])])
    >>> [labels.tolist() for labels in read_label_file(path)]
    [[3, 1, 4], []]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from speechssl.data.compact import Manifest
from speechssl.data.manifest import read_jsonl
from speechssl.safe_io import atomic_write

__all__ = [
    "FrameLabels",
    "check_label_lengths",
    "label_paths",
    "load_frame_labels",
    "manifest_digest",
    "read_label_file",
    "write_label_file",
]


def manifest_digest(manifest_path: str | os.PathLike, data: bytes | None = None) -> str:
    """Short sha256 of a manifest file's bytes (label files record the manifest they label);
    pass ``data`` when the bytes are already read."""
    if data is None:
        data = Path(manifest_path).read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def write_label_file(path: str | os.PathLike, labels: Iterable[np.ndarray]) -> Path:
    """Write one line of space-separated labels per utterance (an empty array: an empty
    line), atomically (temporary file + rename).

    The lines are streamed: ``labels`` may be a generator, and only one utterance's line
    is held at a time (a corpus's labels as one string would be gigabytes).
    """
    with atomic_write(path) as file:
        for values in labels:
            file.write(" ".join(map(str, np.asarray(values).tolist())) + "\n")
    return Path(path)


def label_paths(manifest_path: str | os.PathLike, tag: str) -> tuple[Path, Path]:
    """``(<dir>/<stem>.<tag>.km, <dir>/<stem>.<tag>.km.json)`` beside the manifest."""
    manifest_path = Path(manifest_path)
    if not tag or any(character in tag for character in "/\\ "):
        raise ValueError(f"label tag must be a plain non-empty name, got {tag!r}")
    label_path = manifest_path.with_name(f"{manifest_path.stem}.{tag}.km")
    return label_path, label_path.with_name(label_path.name + ".json")


def read_label_file(path: str | os.PathLike) -> list[np.ndarray]:
    """One int64 array per line of a fairseq ``.km`` file (an empty line gives an empty array).

    Raises:
        ValueError: a line holds something other than non-negative integers.
    """
    labels = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            try:
                values = np.array([int(token) for token in line.split()], dtype=np.int64)
            except ValueError:
                raise ValueError(f"{path}:{number}: expected space-separated integers") from None
            if values.size and values.min() < 0:
                raise ValueError(f"{path}:{number}: negative label")
            labels.append(values)
    return labels


def check_label_lengths(
    durations: Sequence[float],
    label_counts: Sequence[int],
    label_rate: float,
    *,
    max_drift_per_second: float = 1.0,
    edge_frames: float = 2.0,
) -> np.ndarray:
    """Boolean ``(N,)``: True where the label count fits the audio duration.

    An utterance fits when ``|count - duration * label_rate| <= max_drift_per_second *
    duration + edge_frames``; ``edge_frames`` allows for the frames a framed analysis
    loses at the edges (a 25 ms window at a 10 ms hop gives ``(T - 400) // 160 + 1``
    frames: 1.5 to 2.5 fewer than ``duration * 100``). An empty label sequence never fits.

    Example:
        >>> check_label_lengths([1.0, 1.0, 1.0], [98, 95, 0], 100.0).tolist()
        [True, False, False]
    """
    durations = np.asarray(durations, dtype=np.float64)
    counts = np.asarray(label_counts, dtype=np.float64)
    if durations.shape != counts.shape:
        raise ValueError(f"{durations.size} durations but {counts.size} label counts")
    allowed = max_drift_per_second * durations + edge_frames
    return (np.abs(counts - durations * label_rate) <= allowed) & (counts > 0)


class FrameLabels(NamedTuple):
    """A manifest restricted to the utterances with usable labels, and those labels.

    Attributes:
        manifest: the kept rows.
        labels: one int64 ``(L_i,)`` array per kept row.
        mismatched: ``{"id", "duration", "num_labels", "expected"}`` of dropped rows whose
            label count does not fit their duration.
        unlabelled: ids of rows with an empty label line (audio unreadable when labelling).
    """

    manifest: Manifest
    labels: list[np.ndarray]
    mismatched: list[dict]
    unlabelled: list[str]


def load_frame_labels(
    manifest_path: str | os.PathLike,
    label_path: str | os.PathLike,
    label_rate: float,
    *,
    max_drift_per_second: float = 1.0,
    edge_frames: float = 2.0,
    report: Callable[[str], None] | None = print,
    rows: Sequence[dict] | None = None,
) -> FrameLabels:
    """Read a manifest and its ``.km`` labels; drop (and report) rows that do not fit.

    ``rows``: the manifest's rows when the caller has read them already (read once).

    Raises:
        ValueError: the label file has a different number of lines than the manifest.
    """
    rows = list(read_jsonl(manifest_path)) if rows is None else list(rows)
    labels = read_label_file(label_path)
    if len(labels) != len(rows):
        raise ValueError(
            f"{label_path} has {len(labels)} lines but {manifest_path} has {len(rows)} rows: "
            "the labels belong to another manifest; recompute them"
        )
    durations = [float(row["duration"]) for row in rows]
    counts = [values.size for values in labels]
    fits = check_label_lengths(
        durations,
        counts,
        label_rate,
        max_drift_per_second=max_drift_per_second,
        edge_frames=edge_frames,
    )
    unlabelled = [row["id"] for row, count in zip(rows, counts) if count == 0]
    mismatched = [
        {
            "id": row["id"],
            "duration": duration,
            "num_labels": count,
            "expected": round(duration * label_rate, 1),
        }
        for row, duration, count, fit in zip(rows, durations, counts, fits)
        if not fit and count > 0
    ]
    if report is not None and (mismatched or unlabelled):
        report(
            f"{label_path}: dropped {len(mismatched)} utterance(s) whose label count does not "
            f"fit the audio duration (> {max_drift_per_second:g} frame/s) and "
            f"{len(unlabelled)} without labels, of {len(rows)}"
        )
        for entry in mismatched[:10]:
            report(
                f"  {entry['id']}: {entry['num_labels']} labels for {entry['duration']:.2f} s "
                f"(expected about {entry['expected']})"
            )
    kept = np.flatnonzero(fits)
    manifest = Manifest.from_rows(rows[index] for index in kept)
    return FrameLabels(manifest, [labels[index] for index in kept], mismatched, unlabelled)
