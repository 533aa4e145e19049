"""Sequential tar shards (WebDataset) and lhotse Shar: write, index, stream exactly once.

One file per utterance read at random is fine on a laptop and starves GPUs on network
storage. :func:`write_shards` packs a manifest into WebDataset tars (``shard-000000.tar``,
...), each sample ``<key>.json`` (id, duration, sample_rate, speaker, label, text, ...),
``<key>.<ext>`` (the audio file's own bytes, never re-encoded: ``flac``, ``opus``, ``wav``)
and ``<key>.frame_labels.npy`` where frame labels are given. ``index.json`` lists every
shard with its samples, seconds and bytes; ``durations.npy`` holds every sample's seconds
in shard order (what the batch plan needs, without opening a tar). Sample keys are the
manifest row numbers (``000000042``), so ``batch.indices`` are manifest rows again.

:class:`ShardStream` reads such a directory (or a lhotse Shar directory,
``cuts.000000.jsonl.gz`` + ``recording.000000.tar``, through lhotse's own reader). An epoch
is planned from the durations alone, identically in every process:

1. **Shards to readers.** A reader is one DataLoader worker of one DDP rank (``R x W``
   readers). The epoch's shard order is a permutation seeded by ``(seed, epoch)``; each
   shard in that order goes to the reader with the fewest seconds so far. Every shard has
   exactly one reader, so every sample is read exactly once per epoch.
2. **Bounded shuffle and dynamic batches.** A reader's samples (its shards, in order) are
   cut into blocks of ``buffer_size`` consecutive samples; each block is batched by
   :class:`~speechssl.data.sampler.DurationBucketSampler` (padded seconds within
   ``max_batch_seconds``, shuffled buckets, shuffled batches), seeded per reader and
   block. Only one block's compressed bytes are held in memory; audio is decoded per batch.
3. **Uneven division.** When shards do not divide evenly (in count or seconds), readers
   get different batch counts, yet DDP needs every rank to step together and the resume
   needs a fixed interleaving. The readers with fewer batches split their largest batches
   in half (each half still within the budget) until every reader has as many batches as
   the busiest one: no sample is dropped or repeated, a light reader's batches are just
   smaller. Only a reader whose batches are all single samples and still too few gets
   empty batches (``B = 0``) at its end, which the Trainer steps over (under DDP it reruns
   its previous batch with weight 0). Fewer shards than readers (a reader with no shard)
   is refused with one line: write more, smaller shards, or use fewer workers.

Resuming: the DataLoader takes batch ``j`` of a rank from worker ``j mod W`` (every
worker has the same count), so ``batches_consumed`` alone says where every reader stands;
:meth:`ShardStream.load_state_dict` makes each worker skip its consumed batches (their
shards wholly consumed are not opened, the rest of the current block is read, not
decoded). :class:`ShardLoader` exposes the stream as ``batch_sampler``
too, the attribute the Trainer checkpoints and resumes, so the Trainer needs no change.

A shard that is missing, corrupt or truncated costs only its unread samples: one line on
stderr names it and how many samples were lost, and each lost sample reaches
``batch.skipped`` (and so the run's ``skipped.jsonl``) with reason ``unreadable-shard``.

Requires ``pip install 'speechssl[shards]'`` (webdataset; lhotse for Shar and CutSets).

Example:
    >>> import tempfile
    >>> from speechssl.testing import write_tone
    >>> from speechssl.data.compact import Manifest
    >>> folder = tempfile.mkdtemp()
    >>> rows = [{"id": f"u{i}", "audio": str(write_tone(f"{folder}/u{i}.flac", 1.0)),
    ...          "duration": 1.0, "sample_rate": 16000, "speaker": "s"} for i in range(4)]
    >>> index = write_shards(Manifest.from_rows(rows), f"{folder}/shards", shard_seconds=2.0)
    >>> [shard["samples"] for shard in index["shards"]]
    [2, 2]
    >>> stream = ShardStream([f"{folder}/shards"], max_batch_seconds=2.0, buffer_size=4)
    >>> sorted(int(i) for batch in ShardLoader(stream) for i in batch.indices)
    [0, 1, 2, 3]
"""

from __future__ import annotations

import heapq
import io
import itertools
import json
import os
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from speechssl import audio
from speechssl.data.collate import Batch, collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import SkippedItem
from speechssl.data.loaders import DataConfig
from speechssl.data.manifest import OPTIONAL_KEYS, write_jsonl
from speechssl.data.prepare.cutset import cut_metadata
from speechssl.data.sampler import DurationBucketSampler
from speechssl.safe_io import atomic_write, write_text_atomic

__all__ = [
    "INDEX_NAME",
    "ShardLoader",
    "ShardSource",
    "ShardStream",
    "make_shard_loader",
    "open_source",
    "parse_size",
    "write_label_shards",
    "write_shards",
]

INDEX_NAME = "index.json"
DURATIONS_NAME = "durations.npy"
FORMAT = "speechssl-webdataset"
EXTRA = "pip install 'speechssl[shards]'"
SHARD_PATTERN = "shard-{:06d}.tar"
FRAME_LABELS = "frame_labels.npy"


class MissingExtraError(ImportError, ValueError):
    """An optional dependency is not installed (a ValueError too: the CLI's one line)."""


def _webdataset():
    # optional dependency: only shard users need it
    try:
        import webdataset
    except ImportError:
        raise MissingExtraError(f"shards need webdataset: {EXTRA}") from None
    return webdataset


def _lhotse():
    # optional dependency: only lhotse users need it
    try:
        import lhotse
    except ImportError:
        raise MissingExtraError(f"lhotse Shar needs lhotse: {EXTRA}") from None
    return lhotse


def parse_size(text: str) -> int:
    """Bytes of a size like ``1GB``, ``500MB``, ``64KiB`` or ``1000``.

    Example:
        >>> parse_size("1GB"), parse_size("2.5MiB")
        (1000000000, 2621440)
    """
    units = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    value = text.strip().upper().removesuffix("B")
    binary = value.endswith("I")
    value = value.removesuffix("I")
    unit = value[-1] if value and value[-1] in units else ""
    number = value[: len(value) - len(unit)]
    try:
        size = float(number) * (1024 ** "KMGT".index(unit) * 1024 if binary else units[unit])
    except (ValueError, KeyError):
        raise ValueError(f"not a size: {text!r} (e.g. 1GB, 500MB)") from None
    if binary and unit == "":
        raise ValueError(f"not a size: {text!r} (e.g. 1GB, 500MB)")
    if size <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return int(size)


# ------------------------------------------------------------------------------- writing
def write_shards(
    manifest: Manifest,
    out_dir: str | os.PathLike,
    *,
    shard_seconds: float | None = None,
    shard_bytes: int | None = None,
    frame_labels: Sequence[np.ndarray] | None = None,
    label_rate: float | None = None,
    report=print,
) -> dict:
    """Pack ``manifest`` into WebDataset tars under ``out_dir``; returns the index.

    A new shard starts when the next sample would take the current one past
    ``shard_seconds`` of audio or ``shard_bytes`` of audio bytes (a shard holds at least
    one sample). Audio files that cannot be read are left out and listed in
    ``out_dir/skipped.jsonl``. ``frame_labels``: one int array per manifest row at
    ``label_rate`` labels per second, stored with the sample.
    """
    webdataset = _webdataset()
    if (shard_seconds is None) == (shard_bytes is None):
        raise ValueError("give exactly one of shard_seconds or shard_bytes")
    limit = float(shard_seconds if shard_seconds is not None else shard_bytes)
    if limit <= 0:
        raise ValueError(f"the shard size must be positive, got {limit:g}")
    if frame_labels is not None and (len(frame_labels) != len(manifest) or not label_rate):
        raise ValueError("frame labels need one array per manifest row and a label_rate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("shard-*.tar"):
        stale.unlink()
    shards: list[dict] = []
    durations: list[float] = []
    skipped: list[dict] = []
    writer = temporary = None

    def close() -> None:
        if writer is not None:
            writer.close()
            os.replace(temporary, out / shards[-1]["path"])

    for row_number in range(len(manifest)):
        row = manifest.row(row_number)
        try:
            data = Path(row["audio"]).read_bytes()
        except OSError as error:
            skipped.append({"path": row["audio"], "reason": "missing", "detail": str(error)})
            continue
        size = len(data) if shard_seconds is None else row["duration"]
        if writer is None or (shards[-1]["samples"] and shards[-1]["load"] + size > limit):
            close()
            shards.append({"path": SHARD_PATTERN.format(len(shards)), "samples": 0, "load": 0.0})
            shards[-1].update(seconds=0.0, bytes=0)
            temporary = out / (shards[-1]["path"] + ".partial")
            writer = webdataset.TarWriter(str(temporary), encoder=False)
        extension = Path(row["audio"]).suffix.lower().lstrip(".") or "wav"
        meta = {
            key: row[key] for key in ("id", "duration", "sample_rate", *OPTIONAL_KEYS) if key in row
        }
        sample = {"__key__": f"{row_number:09d}", "json": json.dumps(meta).encode()}
        sample[extension] = data
        if frame_labels is not None:
            sample[FRAME_LABELS] = _npy_bytes(np.asarray(frame_labels[row_number]))
        writer.write(sample)
        shard = shards[-1]
        shard["samples"] += 1
        shard["load"] += size
        shard["seconds"] += row["duration"]
        shard["bytes"] += len(data)
        durations.append(row["duration"])
    close()
    for shard in shards:
        del shard["load"]
        shard["seconds"] = round(shard["seconds"], 3)
    index = {
        "format": FORMAT,
        "samples": len(durations),
        "seconds": round(float(np.sum(durations)), 3),
        "label_rate": label_rate if frame_labels is not None else None,
        "shards": shards,
    }
    with atomic_write(out / DURATIONS_NAME, "wb") as file:
        np.save(file, np.asarray(durations, dtype=np.float32))
    write_text_atomic(out / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    write_jsonl(out / "skipped.jsonl", skipped)
    if skipped and report is not None:
        report(f"{out}: left out {len(skipped)} unreadable audio file(s), see skipped.jsonl")
    return index


def write_label_shards(
    shard_dir: str | os.PathLike, tag: str, labels_of, label_rate: float
) -> Path:
    """Write frame labels (e.g. iteration-2 HuBERT targets) as side shards.

    ``labels_of(id) -> (L,) int array`` is called for every sample, in shard order;
    ``shard_dir/labels-<tag>/`` then holds one tar per shard with the same keys, read in
    lockstep with the audio shards by ``ShardStream(..., label_tag=tag)``.
    """
    webdataset = _webdataset()
    source = open_source(shard_dir)
    if not isinstance(source, WebDatasetSource):
        raise ValueError(f"{shard_dir}: side label shards need speechssl shards")  # noqa: TRY004
    folder = Path(shard_dir) / f"labels-{tag}"
    folder.mkdir(exist_ok=True)
    for shard in source.shards:
        temporary = folder / (shard["path"] + ".partial")
        with webdataset.TarWriter(str(temporary), encoder=False) as writer:
            for sample in _tar_samples(source.root / shard["path"]):
                meta = json.loads(sample["json"])
                values = np.asarray(labels_of(meta["id"]))
                writer.write({"__key__": sample["__key__"], FRAME_LABELS: _npy_bytes(values)})
        os.replace(temporary, folder / shard["path"])
    write_text_atomic(folder / "labels.json", json.dumps({"label_rate": label_rate}) + "\n")
    return folder


def _npy_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values.astype(np.int32 if values.size and values.max() < 2**31 else np.int64))
    return buffer.getvalue()


def _tar_samples(path: Path) -> Iterator[dict]:
    """Samples (``{"__key__", ext: bytes}``) of one tar, through webdataset's tar reader."""
    webdataset = _webdataset()
    with open(path, "rb") as stream:
        files = webdataset.tariterators.tar_file_expander([{"url": str(path), "stream": stream}])
        yield from webdataset.tariterators.group_by_keys(files)


# ------------------------------------------------------------------------------- sources
@dataclass
class ShardSample:
    """One sample read from a shard: its number, metadata and a way to decode it."""

    number: int
    meta: dict
    where: str  # "<shard path>:<key>", for skip records
    data: object  # (extension, bytes) of a WebDataset sample, or a lhotse cut
    frame_labels: np.ndarray | None = None

    def decode(self, start: int, num_samples: int) -> tuple[np.ndarray, int]:
        """``((T, C) float32 window, file rate)``; ``num_samples=-1`` reads to the end."""
        if isinstance(self.data, tuple):
            _, data = self.data
            wav, rate = soundfile.read(
                io.BytesIO(data), start=start, frames=num_samples, dtype="float32", always_2d=True
            )
            return wav, rate
        samples = self.data.load_audio()  # lhotse cut: (C, T)
        end = None if num_samples < 0 else start + num_samples
        return np.ascontiguousarray(samples[:, start:end].T, dtype=np.float32), int(
            self.data.sampling_rate
        )


class ShardSource:
    """A directory of shards: their paths, per-sample durations and a sample reader."""

    root: Path
    shards: list[dict]
    durations: np.ndarray
    label_rate: float | None = None

    @property
    def offsets(self) -> np.ndarray:
        """``(num_shards + 1,)`` first sample number of each shard."""
        counts = [shard["samples"] for shard in self.shards]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def read(self, shard: int, first_number: int, label_tag: str | None) -> Iterator[ShardSample]:
        raise NotImplementedError


class WebDatasetSource(ShardSource):
    """The shards :func:`write_shards` writes."""

    def __init__(self, root: Path) -> None:
        index = json.loads((root / INDEX_NAME).read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"{root / INDEX_NAME} is not a speechssl shard index")
        self.root = root
        self.shards = index["shards"]
        self.label_rate = index.get("label_rate")
        self.durations = np.load(root / DURATIONS_NAME)

    def side_label_rate(self, label_tag: str) -> float:
        path = self.root / f"labels-{label_tag}" / "labels.json"
        if not path.is_file():
            raise ValueError(f"{self.root}: no side labels {label_tag!r} ({path} not found)")
        return float(json.loads(path.read_text())["label_rate"])

    def read(self, shard: int, first_number: int, label_tag: str | None) -> Iterator[ShardSample]:
        path = self.root / self.shards[shard]["path"]
        labels = None
        if label_tag is not None:
            labels = _tar_samples(self.root / f"labels-{label_tag}" / self.shards[shard]["path"])
        for offset, sample in enumerate(_tar_samples(path)):
            meta = json.loads(sample["json"])
            audio_keys = [key for key in sample if key not in ("__key__", "__url__", "json")]
            audio_keys = [key for key in audio_keys if not key.endswith(".npy")]
            values = sample.get(FRAME_LABELS)
            if labels is not None:
                side = next(labels)
                if side["__key__"] != sample["__key__"]:
                    raise ValueError(f"side labels out of step at {sample['__key__']}")
                values = side[FRAME_LABELS]
            yield ShardSample(
                first_number + offset,
                meta,
                f"{path}:{sample['__key__']}",
                (audio_keys[0], sample[audio_keys[0]]),
                None if values is None else np.load(io.BytesIO(values)),
            )


class SharSource(ShardSource):
    """A lhotse Shar directory (``cuts.*.jsonl.gz`` + ``recording.*.tar``), read by lhotse."""

    def __init__(self, root: Path) -> None:
        lhotse = _lhotse()
        self.root = root
        cut_files = sorted(root.glob("cuts.*.jsonl.gz"))
        self.shards, durations = [], []
        for cut_file in cut_files:
            recording = root / cut_file.name.replace("cuts.", "recording.").replace(
                ".jsonl.gz", ".tar"
            )
            seconds = [cut.duration for cut in lhotse.CutSet.from_jsonl_lazy(cut_file)]
            durations += seconds
            self.shards.append(
                {
                    "path": recording.name,
                    "cuts": cut_file.name,
                    "samples": len(seconds),
                    "seconds": sum(seconds),
                }
            )
        self.durations = np.asarray(durations, dtype=np.float32)

    def read(self, shard: int, first_number: int, label_tag: str | None) -> Iterator[ShardSample]:
        if label_tag is not None:
            raise ValueError("side labels are read beside speechssl shards only")
        reader = _lhotse().shar.readers.LazySharIterator
        entry = self.shards[shard]
        cuts = reader(
            fields={"cuts": [self.root / entry["cuts"]], "recording": [self.root / entry["path"]]}
        )
        for offset, cut in enumerate(cuts):
            yield ShardSample(
                first_number + offset, cut_metadata(cut), f"{entry['path']}:{cut.id}", cut
            )


def open_source(path: str | os.PathLike) -> ShardSource:
    """A :class:`ShardSource` for a speechssl shard directory or a lhotse Shar directory.

    Raises:
        ValueError: ``path`` is neither (one line).
    """
    root = Path(path).expanduser().resolve()
    if (root / INDEX_NAME).is_file():
        return WebDatasetSource(root)
    if root.is_dir() and any(root.glob("cuts.*.jsonl.gz")):
        return SharSource(root)
    raise ValueError(
        f"{root}: no {INDEX_NAME} (speechssl shard) and no cuts.*.jsonl.gz (lhotse Shar)"
    )


# ---------------------------------------------------------------------------------- plan
@dataclass
class ReaderPlan:
    """One reader's epoch: its shards (indices into the stream's shard list) and its
    batches, grouped by block, as lists of global sample numbers."""

    shards: list[int]
    blocks: list[list[np.ndarray]]

    @property
    def num_batches(self) -> int:
        return sum(len(block) for block in self.blocks)


class ShardStream(IterableDataset):
    """Batches of :class:`~speechssl.data.collate.Batch` streamed from shard directories.

    Args:
        paths: speechssl shard directories and/or lhotse Shar directories (pooled).
        sample_rate: output rate (files at another rate are resampled).
        max_batch_seconds: padded seconds per batch (as the duration-bucket sampler).
        max_duration: random crop in seconds (``None``: whole utterances), seeded by
            ``(seed, epoch, sample number)`` like :class:`~speechssl.data.dataset.AudioDataset`.
        seed: base seed of the shard order, the shuffles and the crops (same on every rank).
        shuffle: shuffle shards, buckets and batches (False: the written order).
        buffer_size: samples per shuffle block (the bounded buffer).
        num_buckets: duration buckets per block.
        num_workers: DataLoader workers per rank (0: read in the main process).
        num_replicas, rank: DDP world size and rank (default: from ``torch.distributed``).
        label_tag: read frame labels from the side shards ``labels-<tag>/`` instead of the
            labels stored with the samples.
        max_batch_size: cap on utterances per batch.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        sample_rate: int = 16000,
        max_batch_seconds: float = 80.0,
        max_duration: float | None = None,
        seed: int = 0,
        shuffle: bool = True,
        buffer_size: int = 1000,
        num_buckets: int = 20,
        num_workers: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        label_tag: str | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        if not paths:
            raise ValueError("no shard directory given")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.num_replicas = num_replicas or (
            torch.distributed.get_world_size() if distributed else 1
        )
        self.rank = (torch.distributed.get_rank() if distributed else 0) if rank is None else rank
        self.sources = [open_source(path) for path in paths]
        # the stream's shard list: (source, shard) pairs, and their first sample numbers
        self.shards = [
            (s, k) for s, source in enumerate(self.sources) for k in range(len(source.shards))
        ]
        self.durations = np.concatenate([source.durations for source in self.sources])
        starts = np.cumsum([0] + [len(source.durations) for source in self.sources])
        self._first_number = [int(starts[s] + self.sources[s].offsets[k]) for s, k in self.shards]
        self._shard_seconds = np.array(
            [float(self.sources[s].shards[k]["seconds"]) for s, k in self.shards]
        )
        self.label_tag = label_tag
        rates = {
            source.side_label_rate(label_tag) if label_tag else source.label_rate
            for source in self.sources
        }
        if len(rates) > 1:
            raise ValueError(f"the shard directories have different label rates: {rates}")
        self.label_rate = rates.pop()
        self.sample_rate = sample_rate
        self.max_batch_seconds = float(max_batch_seconds)
        self.max_duration = max_duration
        self.seed = seed
        self.shuffle = shuffle
        self.buffer_size = buffer_size
        self.num_buckets = num_buckets
        self.num_workers = num_workers
        self.max_batch_size = max_batch_size
        self.epoch = 0
        self._resume_position = 0
        self._position = 0
        self._plan: tuple[int, list[ReaderPlan]] | None = None
        self._crop_durations = (
            self.durations if max_duration is None else np.minimum(self.durations, max_duration)
        )

    @property
    def num_readers(self) -> int:
        return self.num_replicas * max(1, self.num_workers)

    # -------------------------------------------------------------------------- planning
    def plan(self, epoch: int | None = None) -> list[ReaderPlan]:
        """Every reader's plan of ``epoch`` (reader ``rank * W + worker``), equal counts."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng((self.seed, epoch)).permutation(order)
        loads = np.zeros(self.num_readers)
        assigned: list[list[int]] = [[] for _ in range(self.num_readers)]
        for shard in order.tolist():
            reader = int(np.argmin(loads))  # the first of the least loaded
            assigned[reader].append(shard)
            loads[reader] += self._shard_seconds[shard]
        empty = [reader for reader, shards in enumerate(assigned) if not shards]
        if empty:
            raise ValueError(
                f"{len(self.shards)} shards cannot feed {self.num_replicas} rank(s) x "
                f"{max(1, self.num_workers)} worker(s) = {self.num_readers} readers; write at "
                "least one shard per reader (a smaller --shard-seconds) or use fewer workers"
            )
        plans = [
            ReaderPlan(shards, self._reader_blocks(shards, epoch, reader))
            for reader, shards in enumerate(assigned)
        ]
        _equalise(plans)
        self._plan = (epoch, plans)
        return plans

    def _reader_blocks(self, shards: list[int], epoch: int, reader: int) -> list[list[np.ndarray]]:
        numbers = np.concatenate(
            [
                np.arange(self._first_number[s], self._first_number[s] + self._shard_size(s))
                for s in shards
            ]
        )
        blocks = []
        for block_number, first in enumerate(range(0, len(numbers), self.buffer_size)):
            members = numbers[first : first + self.buffer_size]
            seed = np.random.SeedSequence((self.seed, epoch, reader, block_number))
            durations = self._crop_durations[members]
            # buckets of at least two full batches each, so that few batches are partial
            per_batch = max(1, int(self.max_batch_seconds // float(np.median(durations))))
            buckets = max(1, min(self.num_buckets, len(members) // (2 * per_batch)))
            sampler = DurationBucketSampler(
                durations,
                self.max_batch_seconds,
                num_buckets=buckets,
                shuffle=self.shuffle,
                seed=int(seed.generate_state(1)[0]),
                num_replicas=1,
                rank=0,
                max_batch_size=self.max_batch_size,
            )
            blocks.append([members[batch] for batch in sampler.global_batches(0)])
        return blocks

    def _shard_size(self, shard: int) -> int:
        source, k = self.shards[shard]
        return int(self.sources[source].shards[k]["samples"])

    # -------------------------------------------------------------------------- protocol
    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``'s plan; a pending resume is kept only for the same epoch."""
        if epoch != self.epoch:
            self._resume_position = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (equal on every rank)."""
        return self.plan()[0].num_batches * max(1, self.num_workers)

    def state_dict(self, batches_consumed: int | None = None) -> dict:
        """Where this rank stands: epoch and batches consumed (default: yielded)."""
        position = self._position if batches_consumed is None else int(batches_consumed)
        return {
            "epoch": self.epoch,
            "batches_consumed": position,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_workers": self.num_workers,
            "num_utterances": len(self.durations),
            "max_batch_seconds": self.max_batch_seconds,
            "buffer_size": self.buffer_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``: the next iteration yields the rest of its epoch.

        Raises:
            ValueError: the state was saved with another world size, worker count, seed,
                corpus, budget or buffer (the remaining batches would differ).
        """
        mine = self.state_dict()
        for key in (
            "seed",
            "num_replicas",
            "num_workers",
            "num_utterances",
            "max_batch_seconds",
            "buffer_size",
        ):
            if state.get(key, mine[key]) != mine[key]:
                raise ValueError(
                    f"stream state has {key}={state[key]!r}, this stream {mine[key]!r}"
                )
        self.epoch = int(state["epoch"])
        self._resume_position = self._position = int(state["batches_consumed"])

    def start_epoch(self) -> int:
        """Plan the current epoch (before workers copy the stream); the batches to skip."""
        self.plan()
        skip, self._resume_position = self._resume_position, 0
        self._skip = skip
        self._position = skip
        return skip

    # ------------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        reader = self.rank * workers + worker
        skip = getattr(self, "_skip", 0)
        # batch j of the rank comes from worker j mod W: worker w consumed ceil((skip-w)/W)
        skip_mine = max(0, -(-(skip - worker) // workers))
        plan = self.plan()[reader]
        yield from self._read(plan, skip_mine)

    def _samples(self, plan: ReaderPlan, skip: int = 0) -> Iterator[ShardSample | SkippedItem]:
        """The reader's samples in order from its ``skip``-th (shards wholly before it are
        not opened); a shard that breaks off yields SkippedItems for its unread samples."""
        for shard in plan.shards:
            source, k = self.shards[shard]
            first, count = self._first_number[shard], self._shard_size(shard)
            if skip >= count:
                skip -= count
                continue
            leading, skip = skip, 0  # read (not decoded) and dropped
            path = self.sources[source].root / self.sources[source].shards[k]["path"]
            read = 0
            try:
                for sample in self.sources[source].read(k, first, self.label_tag):
                    if read == count:
                        break
                    read += 1
                    if read > leading:
                        yield sample
                error = "ended early" if read < count else ""
            except (OSError, tarfile.TarError, ValueError, EOFError, StopIteration) as problem:
                error = str(problem).splitlines()[0] if str(problem) else type(problem).__name__
            except Exception as problem:  # noqa: BLE001 -- a reader's failure on bad bytes
                error = f"{type(problem).__name__}: {str(problem).splitlines()[0]}"
            if read < count:
                print(
                    f"speechssl: skipped shard {path}: unreadable after {read} of {count} "
                    f"samples ({error}); {count - read} samples lost",
                    file=sys.stderr,
                    flush=True,
                )
                for number in range(first + max(read, leading), first + count):
                    yield SkippedItem(number, str(path), "unreadable-shard", error)

    def _read(self, plan: ReaderPlan, skip: int) -> Iterator[Batch]:
        sizes = [sum(len(batch) for batch in block) for block in plan.blocks]
        # on a resume, the blocks whose batches were all consumed are not read at all
        done, consumed = 0, 0
        while done < len(plan.blocks) and consumed + len(plan.blocks[done]) <= skip:
            consumed += len(plan.blocks[done])
            done += 1
        samples = self._samples(plan, sum(sizes[:done]))
        held: dict[int, ShardSample | SkippedItem] = {}
        position = consumed
        for block, size in zip(plan.blocks[done:], sizes[done:], strict=True):
            # a block is the reader's next consecutive samples (a lost one: a SkippedItem)
            for sample in itertools.islice(samples, size):
                held[sample.number if isinstance(sample, ShardSample) else sample.index] = sample
            for batch in block:
                position += 1
                items = [held.get(int(n)) for n in batch]
                if position > skip:
                    yield collate([self._item(item, int(n)) for item, n in zip(items, batch)])
            held.clear()

    def _item(self, sample: ShardSample | SkippedItem | None, number: int) -> dict | SkippedItem:
        if sample is None:
            return SkippedItem(number, "", "missing-sample", "not found in its shard")
        if isinstance(sample, SkippedItem):
            return sample
        labels = sample.frame_labels
        file_rate = int(sample.meta["sample_rate"])
        start, count, first, num_labels = self._crop(sample, number, file_rate)
        try:
            wav, rate = sample.decode(start, count)
        except Exception as error:  # noqa: BLE001 -- a decoder's failure on bad bytes
            return SkippedItem(number, sample.where, "unreadable", str(error).splitlines()[0])
        wav = torch.from_numpy(wav)  # (T, C)
        wav = wav[:, 0] if wav.shape[1] == 1 else audio.to_mono(wav)  # a view, no copy, if mono
        wav = audio.resample(wav, rate, self.sample_rate)
        if wav.numel() == 0:
            return SkippedItem(number, sample.where, "empty", "no samples in the read window")
        item = {"index": number}
        if labels is not None:
            hop = round(self.sample_rate / self.label_rate)
            if count != -1:
                wav = wav[: num_labels * hop]  # resampling may round up by a sample
            item["frame_labels"] = torch.as_tensor(
                labels[first : first + num_labels], dtype=torch.int64
            )
        elif self.max_duration is not None:
            wav = wav[: int(self.max_duration * self.sample_rate)]
        item["wav"] = wav.contiguous()
        return item

    def _crop(self, sample: ShardSample, number: int, file_rate: int) -> tuple[int, int, int, int]:
        """``(start, num_samples, first label, num_labels)`` of this epoch's crop, the
        rule of :meth:`speechssl.data.dataset.AudioDataset.crop_window`."""
        generator = np.random.default_rng((self.seed, self.epoch, number))
        labels = sample.frame_labels
        if labels is not None:
            num_labels = len(labels)
            if self.max_duration is None:
                return 0, -1, 0, num_labels
            keep = int(np.floor(self.max_duration * self.label_rate))
            if num_labels <= keep:
                return 0, -1, 0, num_labels
            first = int(generator.integers(0, num_labels - keep + 1))
            per_label = file_rate / self.label_rate
            return round(first * per_label), round(keep * per_label), first, keep
        if self.max_duration is None:
            return 0, -1, 0, 0
        total = round(float(sample.meta["duration"]) * file_rate)
        crop = int(self.max_duration * file_rate)
        if total <= crop:
            return 0, -1, 0, 0
        return int(generator.integers(0, total - crop + 1)), crop, 0, 0


def _equalise(plans: list[ReaderPlan]) -> None:
    """Split the largest batches of the lighter readers until every reader has the same
    count (see the module docstring); a reader left with single-sample batches only is
    padded with empty batches at its end. A heap finds the largest batch; a split batch
    is replaced by its two halves, side by side, in its block."""
    target = max(plan.num_batches for plan in plans)
    for plan in plans:
        missing = target - plan.num_batches
        if not missing:
            continue
        pieces: list[np.ndarray] = []  # every batch and half, by id
        layout = []  # per block: the ids of its batches
        for block in plan.blocks:
            layout.append(list(range(len(pieces), len(pieces) + len(block))))
            pieces.extend(block)
        heap = [(-len(batch), key) for key, batch in enumerate(pieces)]
        heapq.heapify(heap)
        halves: dict[int, tuple[int, int]] = {}
        while missing and heap and -heap[0][0] >= 2:
            _, key = heapq.heappop(heap)
            middle = len(pieces[key]) // 2
            halves[key] = (len(pieces), len(pieces) + 1)
            pieces += [pieces[key][:middle], pieces[key][middle:]]
            for half in halves[key]:
                heapq.heappush(heap, (-len(pieces[half]), half))
            missing -= 1
        plan.blocks = [
            [pieces[leaf] for key in keys for leaf in _leaves(key, halves)] for keys in layout
        ]
        plan.blocks[-1].extend([np.zeros(0, dtype=np.int64)] * missing)


def _leaves(key: int, halves: dict[int, tuple[int, int]]) -> list[int]:
    """The unsplit pieces a batch became, in order."""
    if key not in halves:
        return [key]
    first, second = halves[key]
    return _leaves(first, halves) + _leaves(second, halves)


class ShardLoader:
    """A DataLoader over a :class:`ShardStream`, as the Trainer reads it.

    ``dataset`` and ``batch_sampler`` are the stream: the Trainer calls ``set_epoch``,
    checkpoints ``batch_sampler.state_dict()`` and resumes with ``load_state_dict``.
    """

    def __init__(self, stream: ShardStream, pin_memory: bool = False) -> None:
        self.dataset = stream
        self.batch_sampler = stream
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Batch]:
        # not a generator: the DataLoader iterator (which draws a seed from torch's global
        # RNG) is made now, inside the Trainer's fork_rng, not at the first batch
        stream = self.dataset
        stream.start_epoch()  # plans in this process; workers get the plan with the stream
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=stream.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        return self._counted(iter(loader))

    def _counted(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            self.dataset._position += 1
            yield batch


def make_shard_loader(
    paths: Sequence[str | os.PathLike],
    config: DataConfig,
    *,
    seed: int = 0,
    label_tag: str | None = None,
    buffer_size: int = 1000,
) -> ShardLoader:
    """The training loader over shard (or lhotse Shar) directories, configured as
    :func:`speechssl.data.loaders.make_loader` configures a manifest's: crop to
    ``config.max_duration``, batches of ``config.max_batch_seconds`` padded seconds,
    ``config.num_workers`` readers per rank."""
    stream = ShardStream(
        paths,
        sample_rate=config.sample_rate,
        max_batch_seconds=config.max_batch_seconds,
        max_duration=config.max_duration,
        seed=seed,
        buffer_size=buffer_size,
        num_buckets=config.num_buckets,
        num_workers=config.num_workers,
        label_tag=label_tag,
    )
    return ShardLoader(stream)
