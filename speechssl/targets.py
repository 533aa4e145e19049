"""HuBERT targets: fit k-means on the training split's features, label every split, load.

HuBERT (Hsu et al., 2021) predicts a k-means cluster index for every frame. Iteration 1
clusters 39-dim MFCC frames (100 Hz); iteration 2 clusters a hidden layer of the model
trained on iteration 1's targets (50 Hz). One call per iteration does the whole job:

1. read each manifest once (its bytes give the digest the label file records, its lines
   the rows);
2. load the k-means model at ``kmeans_path``, or fit it on the *training* split's features
   and save it (a model fitted per split would give the valid split unrelated cluster
   ids: fairseq#5453);
3. label every split with it into ``<stem>.<tag>.km`` beside the manifest
   (:mod:`speechssl.data.frame_labels`), unless a label file made by the same model from
   the same manifest is there;

   Both reuses are keyed by what the result depends on: the manifest's bytes, the
   identity (path, size, mtime) of every audio file it names, the features (MFCC, or the
   teacher's name, layer and weights) and the fit's settings; anything changed is made again;
4. load the labels back, dropping rows whose label count does not fit their duration.

The training split's audio is decoded once for both the fit and its labels when its
features fit in the fit's frame budget (``max_fit_frames``: the fit then holds them all
anyway) and in 1 GiB; a larger corpus is decoded again to label it, since the fit only
keeps a sample.
The rows and labels then go to :func:`speechssl.data.loaders.make_loader` (``frame_labels=``),
which decodes each utterance once more, for training.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from speechssl.data.manifest import write_jsonl
    >>> from speechssl.testing import write_tone
    >>> root = Path(tempfile.mkdtemp())
    >>> rows = [{"id": f"u{i}", "audio": str(write_tone(root / f"u{i}.wav", 0.5, 16000,
    ...          frequency=200 + 300 * i)), "duration": 0.5, "sample_rate": 16000}
    ...         for i in range(3)]
    >>> write_jsonl(root / "train.jsonl", rows), write_jsonl(root / "valid.jsonl", rows[:1])
    (3, 1)
    >>> config = TargetConfig(mfcc_clusters=4)
    >>> targets = mfcc_targets((root / "train.jsonl", root / "valid.jsonl"), root, config,
    ...                        report=None)
    >>> targets.kmeans.n_clusters, len(targets.train.labels), targets.valid.labels[0].shape
    (4, 3, (48,))
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechssl import audio
from speechssl.cluster import KMeans
from speechssl.data.frame_labels import (
    FrameLabels,
    label_paths,
    load_frame_labels,
    manifest_digest,
    write_label_file,
)
from speechssl.data.manifest import ManifestError, parse_jsonl, read_jsonl
from speechssl.data.prepare.common import write_text_atomic
from speechssl.encoders import Encoder
from speechssl.encoders.base import weights_digest
from speechssl.features import MFCC
from speechssl.objectives.signals import count_statistics
from speechssl.safe_io import files_digest, read_json

__all__ = [
    "MFCC_LABEL_RATE",
    "FeatureFunction",
    "TargetConfig",
    "Targets",
    "encoder_layer_features",
    "ensure_frame_labels",
    "fit_and_label",
    "fit_kmeans",
    "hidden_targets",
    "kmeans_once",
    "label_usage",
    "manifest_features",
    "mfcc_features",
    "mfcc_targets",
]

logger = logging.getLogger(__name__)

# (wav (1, T), lengths (1,)) -> (features (1, F, D), feature lengths (1,))
FeatureFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

MFCC_LABEL_RATE = 100.0  # Kaldi MFCC: a 10 ms hop


@dataclass
class TargetConfig:
    """How the targets are made (a recipe's ``labels`` block).

    Attributes:
        iterations: 1 (MFCC targets) or 2 (then k-means of a hidden layer of a HuBERT model
            trained on the iteration-1 targets).
        mfcc_clusters: k-means classes on MFCC (HuBERT: 100).
        hidden_layer: Transformer layer clustered in iteration 2 (HuBERT Base: 6).
        hidden_clusters: k-means classes on hidden features (HuBERT: 500).
        max_fit_frames: the k-means fit's frame sample (see :class:`speechssl.cluster.KMeans`).
        max_drift_per_second: utterances whose label count drifts from the audio by more
            than this many frames per second (beyond the window's edge frames) are dropped.
    """

    iterations: int = 1
    mfcc_clusters: int = 100
    hidden_layer: int = 6
    hidden_clusters: int = 500
    max_fit_frames: int = 1_000_000
    max_drift_per_second: float = 1.0


@dataclass
class Targets:
    """One label iteration's k-means model and the labelled training and validation splits."""

    kmeans: KMeans
    label_rate: float
    train: FrameLabels
    valid: FrameLabels

    def summary(self) -> dict:
        """What results.json records about these targets (with each split's cluster usage,
        see :func:`label_usage`)."""
        return {
            "kmeans_fingerprint": self.kmeans.fingerprint,
            "num_clusters": self.kmeans.n_clusters,
            "label_rate": self.label_rate,
            "train_utterances": len(self.train.labels),
            "valid_utterances": len(self.valid.labels),
            "dropped_mismatched": len(self.train.mismatched) + len(self.valid.mismatched),
            "dropped_unlabelled": len(self.train.unlabelled) + len(self.valid.unlabelled),
            "label_usage": {
                "train": label_usage(self.train.labels, self.kmeans.n_clusters),
                "valid": label_usage(self.valid.labels, self.kmeans.n_clusters),
            },
        }


def label_usage(labels: Sequence[np.ndarray], num_clusters: int) -> dict[str, float]:
    """How evenly a split's frames use the clusters: ``{"entropy"`` (nats), ``"perplexity"``
    (``exp(entropy)``, at most ``num_clusters``), ``"used_fraction"`` (clusters with at
    least one frame), ``"frames"}``.

    A perplexity far below the cluster count means a few clusters label most frames, and
    masked prediction can score well by predicting them (compare ``accuracy_masked`` with
    ``accuracy_masked_baseline`` in the run's metrics).

    Example:
        >>> usage = label_usage([np.array([0, 1, 2, 3]), np.array([0, 1, 2, 3])], 4)
        >>> round(usage["entropy"], 4) == round(float(np.log(4)), 4), usage["used_fraction"]
        (True, 1.0)
    """
    counts = np.zeros(num_clusters, dtype=np.int64)
    for values in labels:
        counts += np.bincount(values, minlength=num_clusters)[:num_clusters]
    statistics = count_statistics(torch.from_numpy(counts))
    return {name: float(value) for name, value in statistics.items()} | {
        "frames": int(counts.sum())
    }


# ---------------------------------------------------------------------------------------
# feature functions of the two HuBERT iterations


def mfcc_features(sample_rate: int = 16000) -> FeatureFunction:
    """Iteration-1 targets' features: 39-dim Kaldi MFCC (13 + delta + delta-delta), 100 Hz."""
    mfcc = MFCC(num_deltas=2, sample_rate=sample_rate).eval()

    @torch.no_grad()
    def features(wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mfcc(wav, lengths)

    return features


def encoder_layer_features(encoder: Encoder, layer: int) -> FeatureFunction:
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


def _utterance_features(
    rows: Sequence[dict], feature_fn: FeatureFunction, sample_rate: int
) -> Iterator[torch.Tensor | audio.AudioError]:
    """The ``(F, D)`` valid feature frames of each row, or the AudioError of an unreadable
    file, in row order (features on the CPU, where the k-means fits)."""
    for row in rows:
        try:
            wav = audio.load(row["audio"], sample_rate=sample_rate)
        except audio.AudioError as error:
            yield error
            continue
        wav = wav.unsqueeze(0)  # (T,) -> (1, T)
        features, feature_lengths = feature_fn(wav, torch.tensor([wav.shape[1]]))
        if features.dim() != 3 or features.shape[0] != 1:
            raise ValueError(
                f"feature_fn must return (1, F, D) features, got {tuple(features.shape)}"
            )
        yield features[0, : int(feature_lengths[0])].float().cpu()  # (1, F, D) -> (F, D)


def manifest_features(
    manifest_path: str | os.PathLike, feature_fn: FeatureFunction, sample_rate: int = 16000
) -> Iterator[torch.Tensor]:
    """Yield the ``(F, D)`` valid feature frames of each readable utterance of a manifest."""
    for features in _utterance_features(list(read_jsonl(manifest_path)), feature_fn, sample_rate):
        if isinstance(features, torch.Tensor):
            yield features  # unreadable files are reported when labelling; the fit skips them


def fit_kmeans(
    manifest_path: str | os.PathLike,
    feature_fn: FeatureFunction,
    num_clusters: int,
    *,
    max_fit_frames: int = 1_000_000,
    sample_rate: int = 16000,
    seed: int = 0,
    device: str = "auto",
) -> KMeans:
    """Fit :class:`speechssl.cluster.KMeans` on the features of a (training) manifest.

    The frames stream through a reservoir sample of ``max_fit_frames`` (see
    :meth:`KMeans.fit`), so a corpus larger than memory can be clustered.
    """
    kmeans = KMeans(num_clusters, max_fit_frames=max_fit_frames, seed=seed, device=device)
    return kmeans.fit(manifest_features(manifest_path, feature_fn, sample_rate))


def kmeans_once(
    path: str | os.PathLike,
    num_clusters: int,
    fit: Callable[[], KMeans],
    fitted_on: dict | None = None,
) -> KMeans:
    """Load the k-means model at ``path`` (same cluster count, and fitted on the same data:
    ``fitted_on``, recorded at ``<path>.json``) or ``fit()`` and save it."""
    path = Path(path)
    stamp = path.with_name(path.name + ".json")
    if path.is_file() and (fitted_on is None or _stored_stamp(stamp) == fitted_on):
        kmeans = KMeans.load(path, device="cpu")
        if kmeans.n_clusters == num_clusters:
            return kmeans
    kmeans = fit()
    kmeans.save(path)
    if fitted_on is not None:
        write_text_atomic(stamp, json.dumps(fitted_on, sort_keys=True))
    return kmeans


def _stored_stamp(path: Path) -> dict | None:
    """A stamp file's dict, or None when it is missing or damaged (then remade)."""
    try:
        stored = read_json(path, "stamp")
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


# ---------------------------------------------------------------------------------------
# labelling


@dataclass
class _Split:
    """A manifest read once: its path, the digest of its bytes, its rows and the digest of
    its audio files' identities (path, size, mtime: audio replaced under the same manifest
    is noticed)."""

    path: Path
    digest: str
    rows: list[dict]
    audio_digest: str = ""

    @classmethod
    def read(cls, path: str | os.PathLike) -> _Split:
        path = Path(path)
        if not path.is_file():
            raise ManifestError(f"manifest not found: {path}")
        data = path.read_bytes()
        # rows and digest from the same bytes: what the digest names is what is labelled
        rows = list(parse_jsonl(data.decode("utf-8").split("\n"), path))
        audio_digest = files_digest(row["audio"] for row in rows)
        return cls(path, manifest_digest(path, data), rows, audio_digest)


# The features kept for labelling after a fit take at most this much memory (1M frames of
# 39-dim MFCC are 156 MB; 1M of a Base encoder's 768-dim layer would be 3 GB on top of the
# fit's own sample, so such a corpus is decoded again instead).
_MAX_CACHE_BYTES = 2**30


class _FeatureCache:
    """Keeps the features a k-means fit streams through while they fit its frame budget
    (and ``_MAX_CACHE_BYTES``), so the training split's labels need no second decode."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self.items: list[torch.Tensor | audio.AudioError] | None = []
        self.num_frames = 0
        self.num_bytes = 0

    def stream(self, items: Iterable[torch.Tensor | audio.AudioError]) -> Iterator[torch.Tensor]:
        """Yield the feature tensors of ``items`` (what the fit reads), keeping them all."""
        for item in items:
            if self.items is not None:
                self.items.append(item)
                if isinstance(item, torch.Tensor):
                    self.num_frames += item.shape[0]
                    self.num_bytes += item.numel() * item.element_size()
                if self.num_frames > self.max_frames or self.num_bytes > _MAX_CACHE_BYTES:
                    self.items = None  # the fit keeps a sample only: label by decoding again
            if isinstance(item, torch.Tensor):
                yield item


def _write_labels(
    split: _Split,
    kmeans: KMeans,
    features: Iterable[torch.Tensor | audio.AudioError],
    *,
    tag: str,
    label_rate: float,
    progress: bool,
) -> Path:
    """Label every row of ``split`` from its features; unreadable audio gets an empty line
    (line ``i`` still belongs to row ``i``) and is listed in the label file's JSON."""
    label_path, meta_path = label_paths(split.path, tag)
    unreadable: list[dict] = []
    counts = {"utterances": 0, "frames": 0}

    def labels() -> Iterator[np.ndarray]:
        # streamed into the label file: one utterance's labels in memory at a time
        for row, item in zip(
            split.rows,
            tqdm(features, total=len(split.rows), desc="k-means labels", disable=not progress),
        ):
            if isinstance(item, audio.AudioError):
                unreadable.append({"id": row["id"], "audio": row["audio"], "reason": item.reason})
                values = np.empty(0, dtype=np.int64)
            elif item.shape[0]:
                values = kmeans.predict(item).numpy()
            else:
                values = np.empty(0, dtype=np.int64)
            counts["utterances"] += 1
            counts["frames"] += int(values.size)
            yield values

    write_label_file(label_path, labels())
    if unreadable:
        logger.warning(
            "labels: skipped %d unreadable file(s) of %d", len(unreadable), counts["utterances"]
        )
    meta = {
        **_label_stamp(split, kmeans, label_rate),
        "manifest": str(split.path.resolve()),
        "num_utterances": counts["utterances"],
        "num_frames": counts["frames"],
        "unreadable": unreadable,
    }
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return label_path


def _label_stamp(split: _Split, kmeans: KMeans, label_rate: float) -> dict:
    """What a label file must have been made from to be reused."""
    return {
        "kmeans_fingerprint": kmeans.fingerprint,
        "num_clusters": kmeans.n_clusters,
        "manifest_sha256": split.digest,
        "audio": split.audio_digest,
        "label_rate": float(label_rate),
    }


def _labels_are_current(split: _Split, kmeans: KMeans, tag: str, label_rate: float) -> bool:
    label_path, meta_path = label_paths(split.path, tag)
    if not (label_path.is_file() and meta_path.is_file()):
        return False
    stored = _stored_stamp(meta_path)
    if stored is None:
        return False  # a damaged stamp: the labels are made again
    expected = _label_stamp(split, kmeans, label_rate)
    return all(stored.get(key) == value for key, value in expected.items())


def ensure_frame_labels(
    manifest_path: str | os.PathLike,
    kmeans: KMeans,
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
    split = _Split.read(manifest_path)
    if _labels_are_current(split, kmeans, tag, label_rate):
        return label_paths(split.path, tag)[0]
    features = _utterance_features(split.rows, feature_fn, sample_rate)
    return _write_labels(split, kmeans, features, tag=tag, label_rate=label_rate, progress=progress)


def fit_and_label(
    manifests: Sequence[str | os.PathLike],
    kmeans_path: str | os.PathLike,
    feature_fn: FeatureFunction,
    num_clusters: int,
    *,
    tag: str,
    label_rate: float,
    config: TargetConfig,
    seed: int = 0,
    sample_rate: int = 16000,
    report: Callable[[str], None] | None = print,
    features_key: str = "",
) -> Targets:
    """One label iteration: k-means on the features of ``manifests[0]`` (the training split;
    fitted once, kept at ``kmeans_path``), labels of ``manifests`` (train, valid) with it,
    loaded back.

    Raises:
        ValueError: a missing or malformed manifest, features of the wrong shape, too few
            frames for ``num_clusters``.
    """
    train_path, valid_path = manifests
    splits = [_Split.read(train_path), _Split.read(valid_path)]
    cache = _FeatureCache(config.max_fit_frames)

    def fit() -> KMeans:
        kmeans = KMeans(num_clusters, max_fit_frames=config.max_fit_frames, seed=seed, device="cpu")
        return kmeans.fit(
            cache.stream(_utterance_features(splits[0].rows, feature_fn, sample_rate))
        )

    fitted_on = {
        "train_manifest_sha256": splits[0].digest,
        "train_audio": splits[0].audio_digest,
        "features": features_key or tag,
        "seed": seed,
        "max_fit_frames": config.max_fit_frames,
        "sample_rate": sample_rate,
    }
    kmeans = kmeans_once(kmeans_path, num_clusters, fit, fitted_on)
    loaded = []
    for index, split in enumerate(splits):
        label_path = label_paths(split.path, tag)[0]
        if not _labels_are_current(split, kmeans, tag, label_rate):
            features = (
                cache.items
                if index == 0 and cache.items  # the fit just read them all
                else _utterance_features(split.rows, feature_fn, sample_rate)
            )
            _write_labels(split, kmeans, features, tag=tag, label_rate=label_rate, progress=False)
        frame_labels = load_frame_labels(
            split.path,
            label_path,
            label_rate,
            max_drift_per_second=config.max_drift_per_second,
            report=report,
            rows=split.rows,
        )
        loaded.append(frame_labels)
        if report is not None:
            usage = label_usage(frame_labels.labels, kmeans.n_clusters)
            report(
                f"labels {label_path.name}: {len(frame_labels.labels)} utterances, "
                f"{usage['frames']} frames (k-means {kmeans.fingerprint}, {kmeans.n_clusters} "
                f"clusters, {label_rate:g} Hz; perplexity {usage['perplexity']:.1f}, "
                f"{usage['used_fraction']:.0%} of the clusters used)"
            )
    return Targets(kmeans, float(label_rate), loaded[0], loaded[1])


def mfcc_targets(
    manifests: Sequence[str | os.PathLike],
    labels_dir: str | os.PathLike,
    config: TargetConfig,
    *,
    seed: int = 0,
    sample_rate: int = 16000,
    report: Callable[[str], None] | None = print,
) -> Targets:
    """Iteration 1: k-means of 39-dim MFCC (``config.mfcc_clusters`` classes, 100 Hz),
    the model kept at ``labels_dir/iter1_mfcc_k<K>.pt``, labels tagged ``iter1_mfcc``."""
    return fit_and_label(
        manifests,
        Path(labels_dir) / f"iter1_mfcc_k{config.mfcc_clusters}.pt",
        mfcc_features(sample_rate),
        config.mfcc_clusters,
        tag="iter1_mfcc",
        label_rate=MFCC_LABEL_RATE,
        config=config,
        seed=seed,
        sample_rate=sample_rate,
        report=report,
        features_key="mfcc39",
    )


def hidden_targets(
    manifests: Sequence[str | os.PathLike],
    labels_dir: str | os.PathLike,
    encoder: Encoder,
    config: TargetConfig,
    *,
    label_rate: float,
    teacher_name: str,
    seed: int = 0,
    sample_rate: int = 16000,
    report: Callable[[str], None] | None = print,
) -> Targets:
    """Iteration 2: k-means of ``encoder``'s layer ``config.hidden_layer``
    (``config.hidden_clusters`` classes at the encoder's ``label_rate``), the model kept at
    ``labels_dir/iter2_layer<L>_k<K>_<teacher_name>.pt``, labels tagged ``iter2_layer<L>``."""
    layer = config.hidden_layer
    return fit_and_label(
        manifests,
        Path(labels_dir) / f"iter2_layer{layer}_k{config.hidden_clusters}_{teacher_name}.pt",
        encoder_layer_features(encoder, layer),
        config.hidden_clusters,
        tag=f"iter2_layer{layer}",
        label_rate=label_rate,
        config=config,
        seed=seed,
        sample_rate=sample_rate,
        report=report,
        features_key=f"{teacher_name}:layer{layer}:{weights_digest(encoder)}",
    )
