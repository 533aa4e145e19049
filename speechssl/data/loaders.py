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

__all__ = ["DataConfig", "load_manifests", "make_loader", "prepare_once", "prepared_folder"]


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


def prepare_once(corpus: str, src: str | os.PathLike, out: str | os.PathLike, **options) -> dict:
    """``speechssl prepare`` unless ``out`` already holds a preparation of the same source.

    Recipes call this at every start, so a resumed run does not re-read a corpus. Returns
    the summary (``out/summary.json``).
    """
    out = Path(out)
    stamp = out / "source.json"
    source = {"corpus": corpus, "src": str(Path(src).resolve()), **options}
    summary_path = out / "summary.json"
    if summary_path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == source:
        return json.loads(summary_path.read_text())
    summary = prepare(corpus, src, out, **options)
    write_text_atomic(stamp, json.dumps(source))
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
