"""Pre-training stage shared by the recipes: manifests in, a checkpoint out.

Example: see ``recipes/tpc/run.py``::

    checkpoint, result = pretrain_on_manifests(model, train, valid, cfg.data, cfg.trainer,
                                               cfg.optim, run_dir / "pretrain", full_config=cfg)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import nn

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, make_loader
from speechssl.data.shards import make_shard_loader
from speechssl.objectives.signals import BASELINE_SUFFIX, learning_warnings
from speechssl.train import distributed
from speechssl.train.checkpoint import DOWNSTREAM_SECTIONS, latest_checkpoint
from speechssl.train.progress import read_metrics
from speechssl.train.trainer import Trainer
from speechssl.typed import to_dataclass

__all__ = ["learning_check", "pretrain_on_manifests"]

logger = logging.getLogger("speechssl.train")


def pretrain_on_manifests(
    model: nn.Module,
    train_manifest: Manifest | None,
    valid_manifest: Manifest | None,
    data_config,
    trainer_config,
    optim_config,
    run_dir: str | Path,
    *,
    full_config=None,
    seed: int = 0,
    train_labels: Sequence[np.ndarray] | None = None,
    valid_labels: Sequence[np.ndarray] | None = None,
    label_rate: float | None = None,
    train_shards: Sequence[str | Path] | None = None,
) -> tuple[Path, dict]:
    """Train ``model`` (``forward(batch) -> (loss, metrics)``) on audio manifests.

    With ``train_labels`` (and ``valid_labels``: one frame-label array per manifest row at
    ``label_rate``, e.g. :class:`speechssl.targets.Targets`), the batches carry them as
    ``batch.frame_labels``, cropped with the audio.

    With ``train_shards`` (shard or lhotse Shar directories, :mod:`speechssl.data.shards`)
    and no ``train_manifest``, the training batches stream from the shards instead, with
    the frame labels stored there.

    Resumes from ``run_dir`` when a checkpoint is there (``trainer.resume=auto``), so a
    killed recipe picks up where it stopped. Returns the final checkpoint and the
    Trainer's result (including ``valid/loss`` when a validation manifest is given), with
    the final learning signals of :func:`learning_check`.
    """
    data_config = to_dataclass(data_config, DataConfig)
    if (train_manifest is None) == (not train_shards):
        raise ValueError("pre-train on a manifest or on shards, exactly one of them")
    if train_shards:
        train_loader = make_shard_loader(train_shards, data_config, seed=seed)
    else:
        train_loader = make_loader(
            train_manifest,
            data_config,
            train=True,
            frame_labels=train_labels,
            label_rate=label_rate,
            seed=seed,
        )
    valid_loader = None
    if valid_manifest is not None and len(valid_manifest):
        valid_loader = make_loader(
            valid_manifest,
            data_config,
            train=False,
            frame_labels=valid_labels,
            label_rate=label_rate,
        )
    trainer = Trainer(
        model,
        train_loader,
        valid_loader,
        trainer_cfg=trainer_config,
        optim_cfg=optim_config,
        full_config=full_config,
        run_dir=run_dir,
        sample_rate=data_config.sample_rate,
        # a rerun with other downstream options resumes the same pre-training
        resume_ignores=DOWNSTREAM_SECTIONS,
    )
    result = trainer.fit()
    checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    if checkpoint is None:  # only rank 0 writes; other ranks read the same folder
        raise RuntimeError(f"no checkpoint was written under {run_dir}")
    result.update(learning_check(Path(run_dir) / "metrics.jsonl"))
    return checkpoint, result


def learning_check(metrics_path: Path) -> dict:
    """The final learning signals against their baselines, with a warning line per failure.

    Reads the last validation row of ``metrics.jsonl`` (the last training row when the
    run had no validation), logs one warning line for each ``<name>`` that does not beat
    its ``<name>_baseline`` (see :mod:`speechssl.objectives.signals`), and returns what
    results.json records: ``{"learning_signals": {"split", "step", name: value...},
    "learning_warnings": [line, ...]}`` (empty on ranks other than 0, which write no rows).
    ``<name>_ratio`` there is ``<name> / <name>_baseline`` of the row.
    """
    if not distributed.is_main():
        return {}  # rank 0 may still be writing the file the other ranks would read
    rows = read_metrics(metrics_path)
    final = next(
        (row for split in ("valid", "train") for row in reversed(rows) if row["split"] == split),
        None,
    )
    if final is None:
        return {}
    signals = {
        name: value
        for name, value in final.items()
        if name.endswith(BASELINE_SUFFIX) or name + BASELINE_SUFFIX in final
    }
    for name in list(signals):
        if name + "_ratio" in final:
            # the ratio of the row's means (the logged one is a mean of per-batch ratios)
            signals[name + "_ratio"] = final[name] / max(final[name + BASELINE_SUFFIX], 1e-12)
    lines = learning_warnings(final)
    for line in lines:
        logger.warning("pre-training (%s, step %d): %s", final["split"], final["step"], line)
    return {
        "learning_signals": {"split": final["split"], "step": final["step"], **signals},
        "learning_warnings": lines,
    }
