"""DataLoaders from manifests: dataset + duration-bucketed sampler + collate in one call.

Example:
    >>> from speechssl.data.loaders import DataConfig, make_loader
    >>> from speechssl.data.compact import Manifest
    >>> manifest = Manifest.from_rows([{"id": "a", "audio": "/missing.wav", "duration": 1.0,
    ...                                 "sample_rate": 16000}])
    >>> loader = make_loader(manifest, DataConfig(max_batch_seconds=8.0), train=False)
    >>> len(loader)
    1
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from speechssl.data.collate import collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import AudioDataset
from speechssl.data.manifest import read_jsonl
from speechssl.data.prepare import prepare
from speechssl.data.prepare.common import write_text_atomic
from speechssl.data.sampler import DurationBucketSampler
from speechssl.safe_io import files_digest, read_json

__all__ = [
    "DataConfig",
    "load_manifests",
    "make_loader",
    "prepare_once",
    "prepared_folder",
    "source_files",
]


@dataclass
class DataConfig:
    """How utterances are cropped and batched (the Hydra group ``data``).

    Attributes:
        sample_rate: audio is resampled to this rate on load.
        max_batch_seconds: padded seconds per batch and rank (fairseq: max_tokens / rate).
        max_duration: random crop for training, in seconds (fairseq: max_sample_size);
            ``None`` keeps whole utterances. Evaluation never crops.
        num_buckets: duration buckets of the sampler; fewer for small corpora.
        num_workers: DataLoader worker processes (workers only read audio).
    """

    sample_rate: int = 16000
    max_batch_seconds: float = 80.0
    max_duration: float | None = 15.0
    num_buckets: int = 20
    num_workers: int = 2


def make_loader(
    manifest: Manifest,
    config: DataConfig,
    *,
    train: bool = True,
    label_column: str | None = None,
    label_vocabulary: Sequence | None = None,
    frame_labels: Sequence[np.ndarray] | None = None,
    label_rate: float | None = None,
    seed: int = 0,
) -> DataLoader:
    """The one DataLoader of :class:`speechssl.data.collate.Batch` over ``manifest``.

    Rows carry the targets asked for: utterance labels from ``label_column`` (``batch.labels``)
    and/or frame labels at ``label_rate`` cropped with the audio (``batch.frame_labels``,
    see :class:`~speechssl.data.dataset.AudioDataset`). Training loaders shuffle and crop
    to ``config.max_duration``; evaluation loaders keep whole utterances in a fixed order.
    Both shard across torchrun ranks (the sampler reads the rank from
    ``torch.distributed`` once it is initialised).
    """
    crop = config.max_duration if train else None
    dataset = AudioDataset(
        manifest,
        sample_rate=config.sample_rate,
        max_duration=crop,
        label_column=label_column,
        label_vocabulary=label_vocabulary,
        seed=seed,
        frame_labels=frame_labels,
        label_rate=label_rate,
    )
    sampler = DurationBucketSampler(
        manifest.durations,
        config.max_batch_seconds,
        num_buckets=max(1, min(config.num_buckets, len(manifest))),
        shuffle=train,
        seed=seed,
        max_duration=crop,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=config.num_workers,
        persistent_workers=False,
    )


def source_files(src: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """The files a preparation of ``src`` into ``out`` depends on, sorted: every file under
    the corpus folder (hidden ones and ``out`` itself aside), or for a file source (a CSV)
    the file and every audio file ``out``'s manifests name."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if not src.is_dir():
        audio = {
            row["audio"]
            for manifest in sorted(out.glob("*.jsonl"))
            if manifest.name not in ("skipped.jsonl",)
            for row in read_jsonl(manifest, skipped=[])
            if isinstance(row.get("audio"), str)
        }
        return [str(src), *sorted(audio)]
    files = []
    for folder, subfolders, names in os.walk(src):
        # sorted in place: os.walk then descends in a stable order
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and Path(folder, name).resolve() != out
        )
        files += [os.path.join(folder, name) for name in sorted(names) if not name.startswith(".")]
    return files


def _source_listing(src: str | os.PathLike, out: str | os.PathLike) -> dict:
    """How many files the preparation read and a digest of their paths, sizes and mtimes."""
    files = source_files(src, out)
    return {"files": len(files), "digest": files_digest(files)}


def prepare_once(corpus: str, src: str | os.PathLike, out: str | os.PathLike, **options) -> dict:
    """``speechssl prepare`` unless ``out`` already holds a preparation of the same source.

    Recipes call this at every start, so a resumed run does not re-read a corpus. The
    source is listed again each time (paths, sizes and modification times of its files,
    a stat each: :func:`source_files`); a corpus whose audio was replaced, removed or added
    since is prepared again, which one line on stderr says. Returns the summary
    (``out/summary.json``).
    """
    out = Path(out)
    stamp = out / "source.json"
    source = {"corpus": corpus, "src": str(Path(src).resolve()), **options}
    summary_path = out / "summary.json"
    if summary_path.is_file() and stamp.is_file():
        try:
            stored = read_json(stamp, "preparation stamp")
        except ValueError:
            stored = None  # a damaged stamp: prepared again
        if isinstance(stored, dict) and stored.get("source") == source:
            listing = _source_listing(src, out)
            if stored.get("listing") == listing:
                return read_json(summary_path, "preparation summary")
            before = (stored.get("listing") or {}).get("files", "?")
            print(
                f"{corpus}: {source['src']} changed since it was prepared into {out} "
                f"({before} files then, {listing['files']} now; audio replaced, added or "
                "removed); preparing it again",
                file=sys.stderr,
            )
    summary = prepare(corpus, src, out, **options)
    stamp_text = json.dumps({"source": source, "listing": _source_listing(src, out)})
    write_text_atomic(stamp, stamp_text)
    return summary


def prepared_folder(
    corpus: str, src: str | os.PathLike, data_root: str | os.PathLike, **options
) -> Path:
    """``data_root/<corpus>``, prepared from ``src`` once (:func:`prepare_once`).

    The folder where a recipe or ``speechssl evaluate`` keeps a corpus's manifests, e.g.
    ``prepared_folder("voxceleb1", src, run_dir / "data") / "trials.txt"``.
    """
    folder = Path(data_root) / corpus
    prepare_once(corpus, src, folder, **options)
    return folder


def load_manifests(paths: Sequence[str | os.PathLike]) -> Manifest:
    """One compact :class:`Manifest` over several JSONL manifests (e.g. train splits).

    Raises:
        ValueError: no path given; ``ManifestError`` for a missing file.
    """
    if not paths:
        raise ValueError("no manifest given")
    skipped: list[dict] = []
    rows = itertools.chain.from_iterable(read_jsonl(path, skipped=skipped) for path in paths)
    return Manifest.from_rows(rows, skipped=skipped, source=os.fspath(paths[0]))
