"""Frame labels for masked prediction (HuBERT targets): label files, dataset, collate.

HuBERT learns to predict a k-means cluster index for every frame. The labels of a
manifest are computed once (:func:`ensure_frame_labels`) and stored *beside the
manifest* as a fairseq ``.km`` file (one line of space-separated cluster indices per
manifest row) plus a small JSON with the fingerprint of the k-means model and a digest
of the manifest. A later call reuses the file only when both still match, so changing
the k-means model or the manifest recomputes the labels, and the validation split is
always labelled with the k-means model fitted on the *training* split (the pitfall of
fairseq#5453: a k-means fitted per split gives the valid split unrelated cluster ids).

Reading labels back (:func:`load_frame_labels`) checks each utterance's label count
against its duration: an utterance whose count differs from ``duration * label_rate`` by
more than ``max_drift_per_second`` frames per second of audio (after ``edge_frames`` for
the analysis window's edges) is reported and dropped, never silently cropped; an empty
line (audio that could not be read when labelling) is dropped and counted too.

:class:`FrameLabelDataset` returns the waveform with its label sequence; random crops
start and end on whole label frames (multiples of ``sample_rate / label_rate`` samples),
so labels stay aligned with the audio. :func:`collate_frame_labels` pads the labels to
``(B, L)`` with ``pad_label`` and records ``label_lengths (B,)`` in the
:class:`~speechssl.data.collate.Batch`.

Example:
    >>> import tempfile, numpy as np
    >>> from speechssl.data.compact import Manifest
    >>> from speechssl.testing import write_tone
    >>> root = tempfile.mkdtemp()
    >>> rows = [{"id": "a", "audio": str(write_tone(f"{root}/a.wav", 1.0, 16000)),
    ...          "duration": 1.0, "sample_rate": 16000}]
    >>> dataset = FrameLabelDataset(Manifest.from_rows(rows), [np.arange(98) % 7],
    ...                             label_rate=100, max_duration=0.5)
    >>> item = dataset[0]
    >>> item["wav"].shape, item["frame_labels"].shape  # 50 labels x 160 samples
    (torch.Size([8000]), torch.Size([50]))
    >>> batch = collate_frame_labels([item])
    >>> batch.labels.shape, batch.label_lengths.tolist()
    (torch.Size([1, 50]), [50])
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from speechssl import audio
from speechssl.data.collate import Batch, collate
from speechssl.data.compact import Manifest
from speechssl.data.dataset import SkippedItem
from speechssl.data.manifest import read_jsonl
from speechssl.data.prepare.common import write_text_atomic
from speechssl.data.sampler import DurationBucketSampler

__all__ = [
    "FeatureFunction",
    "FrameLabelDataset",
    "FrameLabels",
    "check_label_lengths",
    "collate_frame_labels",
    "encoder_layer_features",
    "ensure_frame_labels",
    "fit_kmeans",
    "label_paths",
    "load_frame_labels",
    "make_frame_label_loader",
    "manifest_digest",
    "manifest_features",
    "mfcc_features",
    "read_label_file",
]

# (wav (1, T), lengths (1,)) -> (features (1, F, D), feature lengths (1,))
FeatureFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------------------
# feature functions of the two HuBERT iterations


def mfcc_features(sample_rate: int = 16000) -> FeatureFunction:
    """Iteration-1 targets' features: 39-dim Kaldi MFCC (13 + delta + delta-delta), 100 Hz."""
    from speechssl.features import MFCC

    mfcc = MFCC(num_deltas=2, sample_rate=sample_rate).eval()

    @torch.no_grad()
    def features(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mfcc(wav, lengths)

    return features


def encoder_layer_features(encoder: torch.nn.Module, layer: int) -> FeatureFunction:
    """Iteration-2 targets' features: ``hidden_states[layer]`` of an encoder (eval mode).

    ``layer`` counts Transformer layers from 1 (``hidden_states[0]`` is the input to the
    first layer); HuBERT Base clusters layer 6 of its iteration-1 model.
    """
    if not 0 <= layer <= encoder.num_layers:
        raise ValueError(f"layer must lie in [0, {encoder.num_layers}], got {layer}")
    encoder.eval()

    @torch.no_grad()
    def features(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = encoder(wav, lengths)
        return output.hidden_states[layer], output.lengths

    return features


def manifest_features(
    manifest_path: str | os.PathLike, feature_fn: FeatureFunction, sample_rate: int = 16000
) -> Iterator[torch.Tensor]:
    """Yield the ``(F, D)`` valid feature frames of each readable utterance of a manifest."""
    for row in read_jsonl(manifest_path):
        try:
            wav = audio.load(row["audio"], sample_rate=sample_rate)
        except audio.AudioError:
            continue  # predict_manifest reports unreadable files; the fit just skips them
        feats, feat_lengths = feature_fn(wav[None], torch.tensor([wav.shape[0]]))
        yield feats[0, : int(feat_lengths[0])].float().cpu()  # (1, F, D) -> (F, D)


def fit_kmeans(
    manifest_path: str | os.PathLike,
    feature_fn: FeatureFunction,
    num_clusters: int,
    *,
    max_fit_frames: int = 1_000_000,
    sample_rate: int = 16000,
    seed: int = 0,
    device: str = "auto",
):
    """Fit :class:`speechssl.cluster.KMeans` on the features of a (training) manifest.

    The frames stream through a reservoir sample of ``max_fit_frames`` (see
    :meth:`KMeans.fit`), so a corpus larger than memory can be clustered.
    """
    from speechssl.cluster import KMeans

    kmeans = KMeans(num_clusters, max_fit_frames=max_fit_frames, seed=seed, device=device)
    return kmeans.fit(manifest_features(manifest_path, feature_fn, sample_rate))


# ---------------------------------------------------------------------------------------
# label files beside the manifest


def manifest_digest(manifest_path: str | os.PathLike) -> str:
    """Short sha256 of a manifest file's bytes (label files record the manifest they label)."""
    return hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()[:16]


def label_paths(manifest_path: str | os.PathLike, tag: str) -> tuple[Path, Path]:
    """``(<dir>/<stem>.<tag>.km, <dir>/<stem>.<tag>.km.json)`` beside the manifest."""
    manifest_path = Path(manifest_path)
    if not tag or any(character in tag for character in "/\\ "):
        raise ValueError(f"label tag must be a plain non-empty name, got {tag!r}")
    label_path = manifest_path.with_name(f"{manifest_path.stem}.{tag}.km")
    return label_path, label_path.with_name(label_path.name + ".json")


def ensure_frame_labels(
    manifest_path: str | os.PathLike,
    kmeans,
    feature_fn: FeatureFunction,
    *,
    tag: str,
    label_rate: float,
    sample_rate: int = 16000,
    progress: bool = False,
) -> Path:
    """Label ``manifest_path`` with ``kmeans`` unless an up-to-date label file is there.

    The labels go to ``<stem>.<tag>.km`` beside the manifest, with ``<stem>.<tag>.km.json``
    recording the k-means fingerprint, the manifest digest and the label rate; when any of
    them changed the labels are recomputed. Label every split with the k-means model
    fitted on the training split. Returns the label file's path.
    """
    label_path, meta_path = label_paths(manifest_path, tag)
    expected = {
        "kmeans_fingerprint": kmeans.fingerprint,
        "num_clusters": kmeans.n_clusters,
        "manifest_sha256": manifest_digest(manifest_path),
        "label_rate": float(label_rate),
    }
    if label_path.is_file() and meta_path.is_file():
        stored = json.loads(meta_path.read_text())
        if all(stored.get(key) == value for key, value in expected.items()):
            return label_path
    report = kmeans.predict_manifest(
        manifest_path,
        feature_fn,
        label_path,
        sample_rate=sample_rate,
        feature_device="cpu",
        progress=progress,
    )
    meta = {
        **expected,
        "manifest": str(Path(manifest_path).resolve()),
        "num_utterances": report.num_utterances,
        "num_frames": report.num_frames,
        "unreadable": report.skipped,
    }
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return label_path


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
) -> FrameLabels:
    """Read a manifest and its ``.km`` labels; drop (and report) rows that do not fit.

    Raises:
        ValueError: the label file has a different number of lines than the manifest.
    """
    rows = list(read_jsonl(manifest_path))
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


# ---------------------------------------------------------------------------------------
# dataset and collate


class FrameLabelDataset(torch.utils.data.Dataset):
    """``{"index", "wav" (T,), "frame_labels" (L,) int64}`` per utterance.

    Args:
        manifest: the utterances (a :class:`Manifest`), in the order of ``labels``.
        labels: one int array of frame labels at ``label_rate`` per row.
        label_rate: labels per second; ``sample_rate / label_rate`` must be a whole
            number of samples (160 at 100 Hz, 320 at 50 Hz for 16 kHz audio).
        sample_rate: output rate (files at another rate are resampled).
        max_duration: seconds; longer utterances are cropped at random to
            ``floor(max_duration * label_rate)`` whole label frames, the audio starting
            at the first kept label's frame. ``None`` keeps whole utterances.
        seed: crops draw from ``numpy.random.default_rng((seed, epoch, index))``.
    """

    def __init__(
        self,
        manifest: Manifest,
        labels: Sequence[np.ndarray],
        label_rate: float,
        sample_rate: int = 16000,
        max_duration: float | None = None,
        seed: int = 0,
    ) -> None:
        if len(labels) != len(manifest):
            raise ValueError(f"{len(labels)} label sequences for {len(manifest)} utterances")
        hop = sample_rate / label_rate
        if label_rate <= 0 or abs(hop - round(hop)) > 1e-6:
            raise ValueError(
                f"sample_rate / label_rate must be a whole number of samples, got {hop}"
            )
        if max_duration is not None and max_duration * label_rate < 1:
            raise ValueError(f"max_duration {max_duration} s holds no label frame")
        self.manifest = manifest
        self.labels = [torch.as_tensor(np.asarray(values), dtype=torch.int64) for values in labels]
        self.label_rate = float(label_rate)
        self.sample_rate = sample_rate
        self.hop = round(hop)
        self.max_labels = None if max_duration is None else math.floor(max_duration * label_rate)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.manifest)

    def crop_labels(self, index: int) -> tuple[int, int]:
        """``(first label, number of labels)`` of this epoch's crop of row ``index``."""
        num_labels = self.labels[index].numel()
        if self.max_labels is None or num_labels <= self.max_labels:
            return 0, num_labels
        generator = np.random.default_rng((self.seed, self.epoch, index))
        return int(generator.integers(0, num_labels - self.max_labels + 1)), self.max_labels

    def __getitem__(self, index: int) -> dict | SkippedItem:
        index = int(index)
        path = self.manifest.audio_path(index)
        first, count = self.crop_labels(index)
        whole = first == 0 and count == self.labels[index].numel()
        file_rate = int(self.manifest.sample_rates[index])
        # whole label frames: the crop starts on label `first`'s hop, in the file's samples
        start = 0 if whole else round(first * self.hop * file_rate / self.sample_rate)
        num_samples = -1 if whole else round(count * self.hop * file_rate / self.sample_rate)
        try:
            wav = audio.load(path, self.sample_rate, start=start, num_samples=num_samples)
        except audio.AudioError as error:
            return SkippedItem(index, path, error.reason, error.detail)
        if wav.numel() == 0:
            return SkippedItem(index, path, "empty", "no samples in the read window")
        if not whole:
            wav = wav[: count * self.hop]  # resampling may round up by a sample
        return {
            "index": index,
            "wav": wav,
            "frame_labels": self.labels[index][first : first + count],
        }


def collate_frame_labels(items: Sequence[dict | SkippedItem | None], pad_label: int = 0) -> Batch:
    """Pad waveforms (see :func:`~speechssl.data.collate.collate`) and frame labels.

    ``batch.labels`` is ``(B, L_max)`` int64 padded with ``pad_label`` and
    ``batch.label_lengths`` ``(B,)`` the valid labels per row. The padding is a valid class
    index (0) because the masked-prediction objective range-checks every entry; it never
    reaches the loss, which only reads labels under ``label_lengths``.
    """
    kept = [item for item in items if isinstance(item, dict)]
    batch = collate(
        [{"index": item["index"], "wav": item["wav"]} for item in kept]
        + [item for item in items if not isinstance(item, dict)]
    )
    label_lengths = torch.tensor([item["frame_labels"].numel() for item in kept], dtype=torch.int64)
    max_labels = int(label_lengths.max()) if kept else 0
    labels = torch.full((len(kept), max_labels), pad_label, dtype=torch.int64)
    for row, item in enumerate(kept):
        labels[row, : item["frame_labels"].numel()] = item["frame_labels"]
    batch.labels = labels
    batch.label_lengths = label_lengths
    return batch


def make_frame_label_loader(
    frame_labels: FrameLabels,
    config,
    label_rate: float,
    *,
    train: bool = True,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of frame-labelled :class:`Batch` es (bucketed by duration like
    :func:`speechssl.data.loaders.make_loader`; ``config`` is a ``DataConfig``)."""
    crop = config.max_duration if train else None
    dataset = FrameLabelDataset(
        frame_labels.manifest,
        frame_labels.labels,
        label_rate,
        sample_rate=config.sample_rate,
        max_duration=crop,
        seed=seed,
    )
    sampler = DurationBucketSampler(
        frame_labels.manifest.durations,
        config.max_batch_seconds,
        num_buckets=max(1, min(config.num_buckets, len(frame_labels.manifest))),
        shuffle=train,
        seed=seed,
        max_duration=crop,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_frame_labels,
        num_workers=config.num_workers,
        persistent_workers=False,
    )
