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
    >>> config = TransferConfig(epochs=30, patience=10, lr=5e-3)
    >>> run = train_classifier(FbankUpstream(n_mels=40), ClassifierHeadConfig(projector_dim=16),
    ...                        manifest, manifest, ["high", "low"], config, root + "/run")
    >>> predictions = predict(run.model, manifest, config)
    >>> float((predictions.y_pred == predictions.y_true).float().mean())
    1.0
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from speechssl.checkpoint_format import Checkpoint, read_checkpoint
from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.encoders import build_encoder
from speechssl.heads import FbankUpstream
from speechssl.heads.config import build_transfer_model
from speechssl.heads.linear_probe import LinearProbe, LinearProbeConfig, ProbeHead
from speechssl.heads.transfer import UtteranceClassificationModel
from speechssl.loading import load_encoder
from speechssl.tasks.pooled import FeatureCache
from speechssl.tasks.pooled_head import (
    PooledHeadModel,
    head_logits_from_means,
    label_indices,
    pooled_loader,
    pools_linearly,
)
from speechssl.train import Trainer
from speechssl.train.checkpoint import latest_checkpoint, save_checkpoint
from speechssl.train.config import (
    EarlyStoppingConfig,
    Mode,
    OptimConfig,
    ParamGroupConfig,
    TrainerConfig,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MONITORS",
    "TRANSFER_MODES",
    "Budget",
    "Predictions",
    "TrainedClassifier",
    "TransferConfig",
    "default_cache",
    "fit_probe_classifier",
    "front_end_buffers",
    "predict",
    "random_init",
    "random_init_like",
    "reads_cached_features",
    "train_classifier",
    "training_report",
    "upstream_factory",
]

# transfer.monitor -> (the evaluation's metric, its better direction)
MONITORS = {"accuracy": ("accuracy", Mode.max), "valid_loss": ("loss", Mode.min)}


@dataclass
class TransferConfig:
    """Budget of one downstream training run, which follows the size of the data.

    ``epochs`` is the one knob: a run makes at most that many passes over its training
    set (the number of steps follows from the set's size and the batch size) and stops
    earlier when the dev ``monitor`` has not improved for ``patience`` evaluations; the
    weights of the best dev ``monitor`` are kept. Nothing else caps it: ``trainer``'s
    length fields (``max_steps``, ``max_epochs``, ``eval_every``, ``early_stopping``) are
    set from these and ignored.

    A frozen upstream under a linearly pooling head trains on cached utterance vectors
    (:mod:`speechssl.tasks.pooled_head`): its epochs are passes over those vectors, in
    batches of ``cached_batch_size`` vectors, with no audio loader. The converged probe
    (``head=linear_probe``) has no budget: L-BFGS runs to convergence.

    Attributes:
        epochs: the most passes over the training set.
        patience: evaluations without a better dev ``monitor`` before stopping (0: never).
        monitor: what early stopping and the kept weights follow: ``"accuracy"`` (dev
            accuracy, higher is better) or ``"valid_loss"`` (dev cross-entropy, lower).
        cached_batch_size: vectors per step of a head trained on cached features.
        evals_per_epoch: dev evaluations per epoch.
        lr: head learning rate (AdamW).
        encoder_lr_scale: encoder lr = ``lr * encoder_lr_scale`` in finetune mode.
        warmup_epochs: linear warmup, in epochs (then cosine decay over ``epochs``).
        weight_decay: AdamW decoupled weight decay.
        data: cropping and batching of the downstream corpus.
        trainer: engine settings (device, precision, threads, logging) of each run.
    """

    epochs: int = 60
    patience: int = 8
    monitor: str = "accuracy"
    cached_batch_size: int = 32
    evals_per_epoch: int = 1
    lr: float = 1e-3
    encoder_lr_scale: float = 0.1
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    data: DataConfig = field(default_factory=lambda: DataConfig(max_batch_seconds=40.0))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(log_every=10))

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(
                f"transfer.monitor must be one of {sorted(MONITORS)}, got {self.monitor!r}"
            )
        for name in ("epochs", "evals_per_epoch", "cached_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"transfer.{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0 or self.warmup_epochs < 0 or self.lr <= 0:
            raise ValueError(
                "transfer.patience and transfer.warmup_epochs must be >= 0 and transfer.lr > 0"
            )


class TrainedClassifier(NamedTuple):
    """The trained ``model`` (best dev weights restored), its run folder, best dev accuracy,
    the Trainer's result (with ``"training"``) and ``checkpoint``: the file holding the
    returned model's whole state (``{"model": state_dict}``), for export and prediction."""

    model: nn.Module
    run_dir: Path
    best_valid_accuracy: float | None
    result: dict
    checkpoint: Path | None = None


class Predictions(NamedTuple):
    """Test outputs in manifest order: ``y_true``/``y_pred`` (N,) class indices,
    ``probabilities`` (N, C)."""

    y_true: torch.Tensor
    y_pred: torch.Tensor
    probabilities: torch.Tensor


class Budget(NamedTuple):
    """Steps of a run derived from ``TransferConfig`` and the training set's batches."""

    steps_per_epoch: int
    max_steps: int
    eval_every: int
    warmup_steps: int


def _budget(config: TransferConfig, steps_per_epoch: int) -> Budget:
    steps_per_epoch = max(int(steps_per_epoch), 1)
    max_steps = config.epochs * steps_per_epoch
    return Budget(
        steps_per_epoch,
        max_steps,
        eval_every=max(steps_per_epoch // config.evals_per_epoch, 1),
        warmup_steps=min(round(config.warmup_epochs * steps_per_epoch), max_steps - 1),
    )


def _trainer_config(config: TransferConfig, budget: Budget, has_valid: bool) -> TrainerConfig:
    metric, mode = MONITORS[config.monitor]
    return dataclasses.replace(
        config.trainer,
        max_steps=budget.max_steps,
        max_epochs=0,
        eval_every=budget.eval_every if has_valid else 0,
        # the last evaluation's state beside best.pt: a killed run resumes where it stood
        checkpoint_every=budget.eval_every,
        keep_last=1,
        early_stopping=EarlyStoppingConfig(metric=metric, mode=mode, patience=config.patience)
        if has_valid
        else EarlyStoppingConfig(),
    )


def _optim_config(config: TransferConfig, budget: Budget, train_encoder: bool) -> OptimConfig:
    groups = []
    if train_encoder:
        groups.append(ParamGroupConfig(prefix="encoder.", lr_scale=config.encoder_lr_scale))
    return OptimConfig(
        lr=config.lr,
        betas=[0.9, 0.98],
        weight_decay=config.weight_decay,
        warmup_steps=budget.warmup_steps,
        schedule="cosine",
        param_groups=groups,
    )


def training_report(result: dict, budget: Budget, config: TransferConfig) -> dict:
    """How far a run went: ``epochs`` (fractional), ``steps``, ``best_step``, ``best_epoch``,
    ``monitor`` and its ``best_value``, ``stop`` (``"plateau"``, ``"cap"``), and
    ``still_improving`` (it hit the cap while its best dev value came at the last
    evaluation)."""
    steps = int(result.get("step", 0))
    best_step = result.get("best_step")
    stopped_on_plateau = result.get("stop_reason") == "early_stopping"
    still_improving = (
        not stopped_on_plateau
        and best_step is not None
        and steps > budget.eval_every
        and int(best_step) > steps - budget.eval_every
    )
    return {
        "epochs": round(steps / budget.steps_per_epoch, 2),
        "max_epochs": config.epochs,
        "steps": steps,
        "steps_per_epoch": budget.steps_per_epoch,
        "best_step": None if best_step is None else int(best_step),
        "best_epoch": None if best_step is None else round(best_step / budget.steps_per_epoch, 2),
        "monitor": config.monitor,
        "best_value": result.get("best_value"),
        "stop": "plateau" if stopped_on_plateau else "cap",
        "still_improving": bool(still_improving),
    }


def _device_of(config: TransferConfig) -> torch.device:
    wanted = str(getattr(config.trainer.device, "value", config.trainer.device))
    use_cuda = wanted != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def default_cache(config: TransferConfig, run_dir: str | Path) -> FeatureCache:
    """The feature cache a run keeps in ``run_dir/feature_cache`` (what a resumed run reads)."""
    return FeatureCache(
        Path(run_dir) / "feature_cache", data_config=config.data, device=_device_of(config)
    )


def fit_probe_classifier(
    encoder: nn.Module,
    probe_config: LinearProbeConfig,
    train_manifest: Manifest,
    valid_manifest: Manifest | None,
    labels: Sequence[str],
    config: TransferConfig,
    run_dir: str | Path,
    *,
    label_column: str = "label",
    cache: FeatureCache | None = None,
) -> TrainedClassifier:
    """The converged linear probe (:class:`speechssl.heads.linear_probe.LinearProbe`) on a
    frozen ``encoder``, returned as one model: ``encoder`` + a :class:`ProbeHead`.

    The same fit as ``speechssl evaluate``: mean+std of each hidden state, standardised,
    L-BFGS logistic regression, hidden state and ``C`` chosen on ``valid_manifest``. The
    whole model's state is written to ``run_dir/checkpoints/model.pt``;
    ``result["training"]`` holds the choice (``layer``, ``c``, ``dev_accuracy``, ...).
    """
    if valid_manifest is None or len(valid_manifest) == 0:
        raise ValueError(
            "head=linear_probe chooses its layer and C on a validation set: it is empty"
        )
    labels = [str(label) for label in labels]
    model = build_transfer_model(probe_config, encoder, num_classes=len(labels))
    cache = cache or default_cache(config, run_dir)
    start = time.perf_counter()
    train_features = cache.pooled(model.encoder, train_manifest)
    valid_features = cache.pooled(model.encoder, valid_manifest)
    encoded = time.perf_counter()
    probe = LinearProbe(probe_config)
    fit = probe.fit(
        train_features,
        label_indices(train_manifest, label_column, labels),
        valid_features,
        label_indices(valid_manifest, label_column, labels),
        num_classes=len(labels),
    )
    head = ProbeHead.from_probe(
        probe, model.encoder.output_dim, len(labels), model.encoder.num_layers + 1
    )
    model.head.load_state_dict(head.state_dict())
    model.eval()
    report = {
        "head": "linear_probe",
        **fit._asdict(),
        "encode_seconds": round(encoded - start, 3),
        "fit_seconds": round(time.perf_counter() - encoded, 3),
    }
    checkpoint = save_checkpoint(
        {"model": model.state_dict(), "step": 0, "probe": report},
        Path(run_dir) / "checkpoints",
        step=0,
        name="model.pt",
    )
    logger.info(
        "%s: probe on hidden state %s with C=%g, dev accuracy %.4f (fit in %.1f s)",
        run_dir,
        "average" if fit.layer == -1 else fit.layer,
        fit.c,
        fit.dev_accuracy,
        report["fit_seconds"],
    )
    return TrainedClassifier(
        model, Path(run_dir), fit.dev_accuracy, {"training": report}, checkpoint
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
    cache: FeatureCache | None = None,
) -> TrainedClassifier:
    """Train ``encoder`` + the head of ``head_config`` to predict ``label_column``.

    With a validation manifest, the weights of the best validation ``transfer.monitor``
    are restored before returning (``run_dir/checkpoints/best.pt``). A run found in
    ``run_dir`` is resumed from its last evaluation (a finished one returns at once). A
    frozen upstream under a linearly pooling head trains on the upstream's cached
    per-layer means (:mod:`speechssl.tasks.pooled_head`), in batches of
    ``transfer.cached_batch_size`` vectors; a :class:`LinearProbeConfig` head is the
    converged probe fitted on the cached mean+std (:func:`fit_probe_classifier`). Pass one
    ``cache`` to every run on the same upstream so it is encoded once (default: one kept
    in ``run_dir/feature_cache``, which a resumed run reads instead of encoding again).
    ``result["training"]`` says how far the run went (:func:`training_report`).
    """
    labels = [str(label) for label in labels]
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {labels}")
    if isinstance(head_config, LinearProbeConfig):
        return fit_probe_classifier(
            encoder,
            head_config,
            train_manifest,
            valid_manifest,
            labels,
            config,
            run_dir,
            label_column=label_column,
            cache=cache,
        )
    # the head's initial weights come from `seed`, not from whatever ran before
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_transfer_model(head_config, encoder, num_classes=len(labels))
    has_valid = valid_manifest is not None and len(valid_manifest) > 0
    trained = model
    valid_loader = None
    if pools_linearly(model):
        cache = cache or default_cache(config, run_dir)
        # a budget over vectors: an epoch is one pass over the cached training vectors
        batch_size = min(config.cached_batch_size, len(train_manifest))
        budget = _budget(config, math.ceil(len(train_manifest) / batch_size))
        train_loader = pooled_loader(
            cache.pooled(model.encoder, train_manifest)[:, :, 0],
            label_indices(train_manifest, label_column, labels),
            batch_size=batch_size,
            train=True,
            seed=seed,
        )
        if has_valid:
            # the whole dev set in one batch: each dev vector counts once
            valid_loader = pooled_loader(
                cache.pooled(model.encoder, valid_manifest)[:, :, 0],
                label_indices(valid_manifest, label_column, labels),
                batch_size=len(valid_manifest),
                train=False,
            )
        trained = PooledHeadModel(model.head)
    else:
        train_loader = make_loader(
            train_manifest,
            config.data,
            train=True,
            label_column=label_column,
            label_vocabulary=labels,
            seed=seed,
        )
        budget = _budget(config, len(train_loader))
        if has_valid:
            valid_loader = make_loader(
                valid_manifest,
                config.data,
                train=False,
                label_column=label_column,
                label_vocabulary=labels,
            )
    trainer_config = dataclasses.replace(
        _trainer_config(config, budget, valid_loader is not None), seed=seed
    )
    trainer = Trainer(
        trained,
        train_loader,
        valid_loader,
        trainer_cfg=trainer_config,
        # an upstream without weights (FBANK) has no encoder group even in finetune mode
        optim_cfg=_optim_config(
            config,
            budget,
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
        kept = read_checkpoint(best_path)
        trained.load_state_dict(kept.model)  # the pooled model shares model.head
        # the dev accuracy of the kept weights, whichever metric chose them
        best = kept.last_evaluation.get("accuracy")
    model.eval()
    checkpoint = best_path if best is not None else latest_checkpoint(best_path.parent)
    if trained is not model:
        # the Trainer saved the head alone: keep the whole model (encoder + head) beside it
        checkpoint = save_checkpoint(
            Checkpoint(model=model.state_dict(), step=result.get("step", 0)),
            best_path.parent,
            step=0,
            name="model.pt",
        )
    report = training_report(result, budget, config)
    logger.info(
        "%s: %.1f epochs (%d steps), dev accuracy %s at the best %s (epoch %s), stopped on the %s",
        run_dir,
        report["epochs"],
        report["steps"],
        "n/a" if best is None else f"{best:.4f}",
        config.monitor,
        report["best_epoch"],
        report["stop"],
    )
    if report["still_improving"]:
        logger.warning(
            "%s: stopped at the cap of transfer.epochs=%d while the dev %s was still improving "
            "(best at the last evaluation, step %d); raise transfer.epochs for a converged head",
            run_dir,
            config.epochs,
            config.monitor,
            report["best_step"],
        )
    return TrainedClassifier(model, Path(run_dir), best, {**result, "training": report}, checkpoint)


def reads_cached_features(model: nn.Module) -> bool:
    """Whether ``model``'s output is a function of its frozen encoder's cached per-layer
    statistics: a linearly pooling trained head, or the probe."""
    probe = (
        isinstance(model, UtteranceClassificationModel)
        and model.mode == "frozen"
        and isinstance(model.head, ProbeHead)
    )
    return probe or pools_linearly(model)


@torch.no_grad()
def predict(
    model: nn.Module,
    manifest: Manifest,
    config: TransferConfig,
    *,
    label_column: str | None = "label",
    labels: Sequence[str] | None = None,
    cache: FeatureCache | None = None,
) -> Predictions:
    """Class probabilities for every utterance of ``manifest`` (no cropping), in manifest
    order. ``y_true`` is filled from ``label_column`` (or -1 without labels). With a
    ``cache``, a frozen linearly pooling model reads the cached per-layer means instead of
    encoding the audio again (the same probabilities)."""
    model.eval()
    if cache is not None and reads_cached_features(model):
        pooled = cache.pooled(model.encoder, manifest)  # (N, L + 1, 2, D)
        if isinstance(model.head, ProbeHead):
            logits = model.head.logits_from_pooled(pooled)
        else:
            device = next(model.head.parameters()).device
            logits = head_logits_from_means(model.head, pooled[:, :, 0].to(device))
        probs = torch.softmax(logits, dim=-1).float().cpu()
        if label_column is not None and labels is not None and label_column in manifest.columns:
            y_true = label_indices(manifest, label_column, labels)
        else:
            y_true = torch.full((len(manifest),), -1, dtype=torch.long)
        return Predictions(y_true, probs.argmax(dim=1), probs)
    # the probe over FBANK has buffers only: any tensor of the model says where it lives
    device = next(itertools.chain(model.parameters(), model.buffers())).device
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


def front_end_buffers(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The state of an encoder's weight-free front end: every buffer of a ``front_end``
    module at any depth (``front_end.normalize.mean`` of the filterbank encoders,
    ``feature_extractor.front_end.normalize.mean`` of the mel-input HuBERT)."""
    buffers = dict(encoder.named_buffers())
    return {
        key: value
        for key, value in encoder.state_dict().items()
        if key in buffers and (key.startswith("front_end.") or ".front_end." in key)
    }


def random_init(encoder_config, front_end_state: dict[str, torch.Tensor] | None = None):
    """A freshly initialised encoder (from torch's global generator: seed it first) that
    takes ``front_end_state`` (:func:`front_end_buffers` of a pre-trained one), so that it
    differs from that encoder in its learned weights only."""
    encoder = build_encoder(encoder_config)
    if front_end_state:
        encoder.load_state_dict(front_end_state, strict=False)
    return encoder


def random_init_like(encoder: nn.Module, seed: int) -> nn.Module:
    """A freshly initialised encoder of ``encoder``'s architecture (seeded; the global RNG is
    left as it was) that shares its weight-free front end (e.g. global CMVN statistics), as
    the recipes' ``random_frozen`` baseline does: only the learned weights differ.

    Raises:
        ValueError: ``encoder`` has no learned weights to redraw (FBANK) or no config.
    """
    config = getattr(encoder, "config", None)
    if config is None or not any(True for _ in encoder.parameters()):
        raise ValueError(f"{type(encoder).__name__} has no learned weights to re-initialise")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return random_init(copy.deepcopy(config), front_end_buffers(encoder)).eval()


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
        front_end_state = front_end_buffers(load_encoder(checkpoint)) if checkpoint else {}

        def make_random():
            torch.manual_seed(seed)
            return random_init(encoder_config, front_end_state)

        return make_random, head_mode
    if checkpoint is None:
        raise ValueError(f"transfer mode {mode!r} needs a pre-trained checkpoint")
    return (lambda: load_encoder(checkpoint)), head_mode
