"""Speaker identification and verification runners for any upstream (reusable by recipes).

* :func:`run_speaker_identification`: train encoder + head (a classifier or ECAPA head)
  on a VoxCeleb1-style ``train`` split, keep the weights of the best ``dev`` accuracy and
  report top-1 accuracy on ``test`` (VoxCeleb1 ``iden_split``: the same speakers in all
  three splits, different videos/utterances).
* :func:`run_speaker_verification`: score VoxCeleb-style trials by the cosine similarity
  of *training-free* utterance embeddings: each hidden state of the frozen encoder is
  mean-pooled over the utterance's valid frames and the chosen layers are averaged
  (default: all of them, the uniform weighted-layer sum). Nothing is trained on the
  verification speakers, so they stay unseen even when they also appear in an
  identification split; EER and minDCF follow.

Example (FBANK upstream on tones of two "speakers"):
    >>> import tempfile
    >>> from speechssl.data.compact import Manifest
    >>> from speechssl.encoders.fbank_upstream import FbankUpstream
    >>> from speechssl.tasks.speaker import Trial
    >>> from speechssl.testing import write_tone
    >>> root = tempfile.mkdtemp()
    >>> rows = [{"id": f"s{i % 2}/u{i}", "audio": str(write_tone(f"{root}/u{i}.wav", 0.5, 16000,
    ...          frequency=300 if i % 2 else 2000)), "duration": 0.5, "sample_rate": 16000,
    ...          "speaker": f"s{i % 2}"} for i in range(4)]
    >>> trials = [Trial(1, "s0/u0", "s0/u2"), Trial(0, "s0/u0", "s1/u1"), Trial(1, "s1/u1", "s1/u3")]
    >>> result, _ = run_speaker_verification(lambda: FbankUpstream(40), Manifest.from_rows(rows), trials)
    >>> result["eer"], result["num_trials"]
    (0.0, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.tasks.classification import TransferConfig, predict, train_classifier
from speechssl.tasks.speaker import Trial, collect_outputs, verification_eer

__all__ = [
    "pooled_embeddings",
    "run_speaker_identification",
    "run_speaker_verification",
    "speakers_of",
]


def speakers_of(manifest: Manifest) -> list[str]:
    """Sorted distinct speakers of a manifest (the identification label order).

    Raises:
        ValueError: the manifest has no ``speaker`` column or a row without speaker.
    """
    if "speaker" not in manifest.columns:
        raise ValueError("speaker tasks need a 'speaker' column in the manifest")
    values = manifest.column("speaker").values()
    if any(value is None for value in values):
        raise ValueError("every utterance needs a speaker")
    return sorted({str(value) for value in values})


def run_speaker_identification(
    make_encoder: Callable[[], torch.nn.Module],
    train: Manifest,
    dev: Manifest | None,
    test: Manifest,
    head_config,
    config: TransferConfig,
    run_dir: str | Path,
    *,
    seed: int = 0,
) -> dict:
    """Closed-set speaker identification: train on ``train``, select on ``dev``, score ``test``.

    Returns ``{"top1", "dev_top1", "num_speakers", "num_train", "num_test",
    "layer_weights"}`` (layer weights of the head's weighted layer sum as a list, or None).

    Raises:
        ValueError: a dev/test speaker that is not in ``train`` (closed set).
    """
    speakers = speakers_of(train)
    for name, split in (("dev", dev), ("test", test)):
        if split is not None and len(split):
            unknown = sorted(set(speakers_of(split)) - set(speakers))
            if unknown:
                raise ValueError(f"{name} speakers missing from train (closed set): {unknown[:5]}")
    run = train_classifier(
        make_encoder(),
        head_config,
        train,
        dev,
        speakers,
        config,
        run_dir,
        label_column="speaker",
        seed=seed,
    )
    predictions = predict(run.model, test, config, label_column="speaker", labels=speakers)
    weights = run.model.layer_weights()
    return {
        "top1": float((predictions.y_pred == predictions.y_true).float().mean()),
        "dev_top1": None if run.best_valid_accuracy is None else float(run.best_valid_accuracy),
        "num_speakers": len(speakers),
        "num_train": len(train),
        "num_test": len(test),
        "layer_weights": None if weights is None else weights.detach().cpu().tolist(),
    }


def pooled_embeddings(
    encoder: torch.nn.Module,
    manifest: Manifest,
    data_config: DataConfig | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """``(N, D)`` utterance embeddings in manifest order: each hidden state in ``layers``
    (default all; 0 = the input to the first layer) mean-pooled over valid frames, then
    averaged over the layers. The encoder runs in eval mode without gradients."""
    data_config = data_config or DataConfig(max_batch_seconds=40.0, num_workers=0)
    encoder.eval()
    loader = make_loader(
        manifest, dataclasses.replace(data_config, num_workers=0, max_duration=None), train=False
    )

    def embed(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        output = encoder(wav, lengths)
        hidden = output.hidden_states
        chosen = range(len(hidden)) if layers is None else layers
        stacked = torch.stack([hidden[index] for index in chosen])  # (K, B, F, D)
        frames = torch.arange(stacked.shape[2], device=stacked.device)
        # (B, F) -> (1, B, F, 1) so the mask broadcasts over layers and channels
        valid = (frames[None, :] < output.lengths[:, None])[None, :, :, None].to(stacked.dtype)
        pooled = (stacked * valid).sum(dim=2) / valid.sum(dim=2).clamp(min=1)  # (K, B, D)
        return pooled.mean(dim=0)  # (K, B, D) -> (B, D)

    with torch.no_grad():
        embeddings, _, _ = collect_outputs(embed, loader)
    return embeddings


def run_speaker_verification(
    make_encoder: Callable[[], torch.nn.Module],
    manifest: Manifest,
    trials: Sequence[Trial],
    *,
    data_config: DataConfig | None = None,
    layers: Sequence[int] | None = None,
) -> tuple[dict, torch.Tensor]:
    """Cosine scoring of ``trials`` with :func:`pooled_embeddings` of the frozen encoder.

    ``manifest`` ids must be the trial utterance names. Returns ``({"eer", "min_dcf",
    "num_trials", ...}, embeddings (N, D) in manifest order)`` (the embeddings, e.g. for a
    t-SNE plot).
    """
    if not trials:
        raise ValueError("no verification trials")
    embeddings = pooled_embeddings(make_encoder(), manifest, data_config, layers)
    ids = [manifest.row(index)["id"] for index in range(len(manifest))]
    by_id = dict(zip(ids, embeddings))
    result = verification_eer(by_id, trials)
    result = {
        key: float(value) if isinstance(value, (float, np.floating)) else value
        for key, value in result.items()
    }
    return result, embeddings
