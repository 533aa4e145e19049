"""Train an utterance classifier on any encoder and score it: the loop behind every
downstream protocol (emotion LOSO folds, speaker identification, a user's own labels).

One call trains a transfer model (encoder + head, frozen or fine-tuned) with the shared
:class:`speechssl.train.Trainer`, keeps the checkpoint with the best validation accuracy,
and returns it with the test predictions in manifest order.

Example (frozen FBANK baseline on two tones):
    >>> import tempfile, torch
    >>> from speechssl.testing import write_tone
    >>> from speechssl.data.compact import Manifest
    >>> from speechssl.heads import ClassifierHeadConfig, FbankUpstream
    >>> root = tempfile.mkdtemp()
    >>> rows = [{"id": f"u{i}", "audio": str(write_tone(f"{root}/u{i}.wav", 0.5, 16000,
    ...          frequency=300 if i % 2 else 2000)), "duration": 0.5, "sample_rate": 16000,
    ...          "label": "low" if i % 2 else "high"} for i in range(8)]
    >>> manifest = Manifest.from_rows(rows)
    >>> config = TransferConfig(max_steps=30, eval_every=10, lr=5e-3)
    >>> run = train_classifier(FbankUpstream(n_mels=40), ClassifierHeadConfig(projector_dim=16),
    ...                        manifest, manifest, ["high", "low"], config, root + "/run")
    >>> predictions = predict(run.model, manifest, config)
    >>> float((predictions.y_pred == predictions.y_true).float().mean())
    1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.encoders import build_encoder
from speechssl.heads import FbankUpstream
from speechssl.heads.config import build_transfer_model
from speechssl.loading import load_encoder
from speechssl.train import Trainer
from speechssl.train.checkpoint import load_checkpoint
from speechssl.train.config import EarlyStoppingConfig, OptimConfig, ParamGroupConfig, TrainerConfig

__all__ = [
    "TRANSFER_MODES",
    "Predictions",
    "TrainedClassifier",
    "TransferConfig",
    "predict",
    "train_classifier",
    "upstream_factory",
]


@dataclass
class TransferConfig:
    """Budget of one downstream training run (SUPERB-like defaults, scaled down).

    Attributes:
        max_steps: optimiser steps per run (capped by ``trainer.max_steps`` in recipes).
        lr: head learning rate (AdamW).
        encoder_lr_scale: encoder lr = ``lr * encoder_lr_scale`` in finetune mode.
        warmup_steps: linear warmup.
        eval_every: validation interval; the best validation accuracy's weights are kept.
        weight_decay: AdamW decoupled weight decay.
        data: cropping and batching of the downstream corpus.
        trainer: engine settings (device, precision, workers, logging) of each run.
    """

    max_steps: int = 400
    lr: float = 1e-3
    encoder_lr_scale: float = 0.1
    warmup_steps: int = 20
    eval_every: int = 50
    weight_decay: float = 1e-4
    data: DataConfig = field(default_factory=lambda: DataConfig(max_batch_seconds=40.0))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(log_every=10))


class TrainedClassifier(NamedTuple):
    model: nn.Module
    run_dir: Path
    best_valid_accuracy: float | None
    result: dict


class Predictions(NamedTuple):
    """Test outputs in manifest order: ``y_true``/``y_pred`` (N,) class indices,
    ``probabilities`` (N, C)."""

    y_true: torch.Tensor
    y_pred: torch.Tensor
    probabilities: torch.Tensor


def _trainer_config(config: TransferConfig, has_valid: bool) -> TrainerConfig:
    return dataclasses.replace(
        config.trainer,
        max_steps=config.max_steps,
        max_epochs=0,
        eval_every=config.eval_every if has_valid else 0,
        checkpoint_every=max(config.max_steps, 1),
        keep_last=1,
        early_stopping=EarlyStoppingConfig(metric="accuracy", mode="max")
        if has_valid
        else EarlyStoppingConfig(),
    )


def _optim_config(config: TransferConfig, train_encoder: bool) -> OptimConfig:
    groups = []
    if train_encoder:
        groups.append(ParamGroupConfig(prefix="encoder.", lr_scale=config.encoder_lr_scale))
    return OptimConfig(
        lr=config.lr,
        betas=[0.9, 0.98],
        weight_decay=config.weight_decay,
        warmup_steps=min(config.warmup_steps, max(config.max_steps - 1, 0)),
        schedule="cosine",
        param_groups=groups,
    )


def train_classifier(
    encoder: nn.Module,
    head_config,
    train_manifest: Manifest,
    valid_manifest: Manifest | None,
    labels: Sequence[str],
    config: TransferConfig,
    run_dir: str | Path,
    *,
    label_column: str = "label",
    seed: int = 0,
    full_config: dict | None = None,
) -> TrainedClassifier:
    """Train ``encoder`` + the head of ``head_config`` to predict ``label_column``.

    With a validation manifest, the weights of the best validation accuracy are restored
    before returning (``run_dir/checkpoints/best.pt``). A finished run found in ``run_dir``
    is resumed (and so returns at once).
    """
    labels = [str(label) for label in labels]
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {labels}")
    # the head's initial weights come from `seed`, not from whatever ran before
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_transfer_model(head_config, encoder, num_classes=len(labels))
    train_loader = make_loader(
        train_manifest,
        config.data,
        train=True,
        label_column=label_column,
        label_vocabulary=labels,
        seed=seed,
    )
    valid_loader = None
    if valid_manifest is not None and len(valid_manifest):
        valid_loader = make_loader(
            valid_manifest,
            config.data,
            train=False,
            label_column=label_column,
            label_vocabulary=labels,
        )
    trainer_config = dataclasses.replace(
        _trainer_config(config, valid_loader is not None), seed=seed
    )
    trainer = Trainer(
        model,
        train_loader,
        valid_loader,
        trainer_cfg=trainer_config,
        # an upstream without weights (FBANK) has no encoder group even in finetune mode
        optim_cfg=_optim_config(
            config,
            train_encoder=head_config.mode == "finetune"
            and any(parameter.requires_grad for parameter in model.encoder.parameters()),
        ),
        full_config=full_config,
        run_dir=run_dir,
        sample_rate=config.data.sample_rate,
        show_progress=False,
    )
    result = trainer.fit()
    best_path = Path(run_dir) / "checkpoints" / "best.pt"
    best = None
    if valid_loader is not None and best_path.is_file():
        state = load_checkpoint(best_path)
        model.load_state_dict(state["model"])
        best = state.get("trainer", {}).get("best_value")
    model.eval()
    return TrainedClassifier(model, Path(run_dir), best, result)


@torch.no_grad()
def predict(
    model: nn.Module,
    manifest: Manifest,
    config: TransferConfig,
    *,
    label_column: str | None = "label",
    labels: Sequence[str] | None = None,
) -> Predictions:
    """Class probabilities for every utterance of ``manifest`` (no cropping), in manifest
    order. ``y_true`` is filled from ``label_column`` (or -1 without labels)."""
    model.eval()
    device = next(model.parameters()).device
    loader = make_loader(
        manifest,
        dataclasses.replace(config.data, num_workers=0),
        train=False,
        label_column=label_column,
        label_vocabulary=labels,
    )
    probabilities, indices, targets = [], [], []
    for batch in loader:
        if len(batch) == 0:
            continue
        batch = batch.to(device)
        probabilities.append(model.predict_proba(batch.wav, batch.lengths).float().cpu())
        indices.append(batch.indices.cpu())
        targets.append(
            batch.labels.cpu()
            if batch.labels is not None
            else torch.full_like(batch.indices.cpu(), -1)
        )
    if not probabilities:
        raise ValueError("no utterance of the manifest could be read")
    order = torch.argsort(torch.cat(indices))
    probs = torch.cat(probabilities)[order]
    return Predictions(torch.cat(targets)[order], probs.argmax(dim=1), probs)


# Upstreams compared under one head: the paper's transfer modes and the two baselines.
TRANSFER_MODES = {
    "fbank": "FBANK features, no encoder (baseline)",
    "random_frozen": "same encoder, random weights, frozen (baseline)",
    "random_finetune": "same encoder, random weights, trained end to end (baseline)",
    "pretrained_frozen": "pre-trained encoder, frozen, learned weighted sum of layers",
    "pretrained_finetune": "pre-trained encoder, fine-tuned end to end",
}


def upstream_factory(
    mode: str, encoder_config, checkpoint: str | Path | None, n_mels: int = 80, seed: int = 0
):
    """``(make_encoder, head_mode)`` for a transfer mode of :data:`TRANSFER_MODES`.

    ``make_encoder()`` returns a fresh module each call: the pre-trained encoder reloaded
    from ``checkpoint``, the same architecture re-initialised with ``seed`` (sharing the
    pre-trained encoder's weight-free front end, such as global CMVN statistics, when a
    checkpoint is given), or the FBANK upstream with ``n_mels`` bins.
    """
    if mode not in TRANSFER_MODES:
        raise ValueError(f"unknown transfer mode {mode!r}; choose from {sorted(TRANSFER_MODES)}")
    head_mode = "finetune" if mode.endswith("finetune") else "frozen"
    if mode == "fbank":
        return (lambda: FbankUpstream(n_mels=n_mels)), head_mode
    if mode.startswith("random"):
        # the random baseline keeps the pre-trained encoder's weight-free front end (e.g.
        # its global CMVN statistics) so that only the learned weights differ
        front_end_state = {}
        if checkpoint is not None:
            front_end_state = {
                key: value
                for key, value in load_encoder(checkpoint).state_dict().items()
                if key.startswith("front_end.")
            }

        def make_random():
            torch.manual_seed(seed)
            encoder = build_encoder(encoder_config)
            if front_end_state:
                encoder.load_state_dict(front_end_state, strict=False)
            return encoder

        return make_random, head_mode
    if checkpoint is None:
        raise ValueError(f"transfer mode {mode!r} needs a pre-trained checkpoint")
    return (lambda: load_encoder(checkpoint)), head_mode
