"""Pre-training and fine-tuning a Tacotron 2 with the shared Trainer: the step budget, the
dev criteria fine-tuning early-stops on (:data:`SELECT_ON`, :class:`FreeRunningDev`) and the
model fine-tuning starts from (:func:`finetune_model`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from speechssl.safe_io import load_torch_file
from speechssl.train import distributed
from speechssl.train.checkpoint import latest_checkpoint
from speechssl.train.config import EarlyStoppingConfig, TrainerConfig
from speechssl.train.progress import read_metrics
from speechssl.train.trainer import Trainer
from speechssl.tts.data import TTSDataset, collate_tts
from speechssl.tts.model import TacotronConfig, TacotronTTS
from speechssl.tts.study.sets import TestSentence
from speechssl.tts.study.synthesis import evaluate_model, load_references
from speechssl.typed import to_dataclass


def training_steps(num_clips: int, batch_size: int, epochs: float, cap: int = 0) -> int:
    """Optimiser steps for ``epochs`` passes over ``num_clips`` clips at ``batch_size`` (the
    batch capped at the clips): a budget that scales with the subset. ``cap`` > 0 bounds it.

    Example:
        >>> training_steps(30, 8, 40), training_steps(4, 8, 40), training_steps(30, 8, 40, cap=4)
        (150, 40, 4)
    """
    if num_clips < 1 or batch_size < 1 or epochs <= 0:
        raise ValueError("training_steps needs num_clips >= 1, batch_size >= 1 and epochs > 0")
    steps = max(1, math.ceil(epochs * num_clips / min(batch_size, num_clips)))
    return min(steps, cap) if cap > 0 else steps


# finetune.select_on -> the dev metric fine-tuning early-stops on and keeps best.pt by
# (all lower-is-better): the teacher-forced loss, or a free-running one (FreeRunningDev)
SELECT_ON = {
    "dev_loss": "loss",
    "dev_mcd": "free_mcd_dtw_sl_db",
    "dev_stop": "free_stop_length_error",
}


def selection_metric(select_on: str) -> str:
    """The dev metric ``finetune.select_on`` names (:data:`SELECT_ON`); one line if unknown.

    Example:
        >>> selection_metric("dev_mcd")
        'free_mcd_dtw_sl_db'
    """
    if select_on not in SELECT_ON:
        raise ValueError(f"finetune.select_on={select_on!r}: expected one of {sorted(SELECT_ON)}")
    return SELECT_ON[select_on]


def budget_record(
    pretrain_epochs: float, finetune: Mapping, stages: Mapping[float, Mapping]
) -> dict:
    """``results.json: budget``: the pre-training epochs and steps run per fraction, the
    fine-tuning rule (``finetune`` config: max_steps, eval_every, patience, select_on) and
    why each fraction's fine-tuning ended (``early_stopping``: no better criterion value
    for ``patience`` evaluations; ``max_steps``: the cap)."""
    return {
        "pretrain_epochs": pretrain_epochs,
        "pretrain_steps": {
            f"{f:g}": stage["pretrain"].get("steps_run", 0) for f, stage in stages.items()
        },
        **{
            f"finetune_{key}": finetune[key]
            for key in ("max_steps", "eval_every", "patience", "select_on")
        },
        "finetune_stop_reason": {
            f"{f:g}": stage["finetune"].get("stop_reason") for f, stage in stages.items()
        },
    }


def training_seeds(seeds: Sequence[int]) -> list[int]:
    """The ``seeds`` option as a list; none raises ``ValueError`` (one line)."""
    if not seeds:
        raise ValueError("seeds: give at least one training seed, e.g. seeds=[0,1]")
    return [int(seed) for seed in seeds]


def record_stage(
    stages: dict,
    fraction: float,
    seed: int,
    checkpoint,
    pretrain: Mapping,
    finetune: Mapping,
    seconds: Mapping,
) -> None:
    """Add one (fraction, training seed) run to ``stages`` (``results.json: stages``): the
    fraction's first seed is its record (budget, plots); every seed's is under ``by_seed``.

    Example:
        >>> stages = {}
        >>> record_stage(stages, 0.5, 0, "a.pt", {"steps_run": 4}, {}, {})
        >>> record_stage(stages, 0.5, 1, "b.pt", {"steps_run": 4}, {}, {})
        >>> stages[0.5]["pretrain"]["checkpoint"], sorted(stages[0.5]["by_seed"])
        ('a.pt', ['0', '1'])
    """
    stage = {
        "pretrain": {"checkpoint": str(checkpoint) if checkpoint else None, **pretrain},
        "finetune": dict(finetune),
        "seconds": dict(seconds),
    }
    stages.setdefault(fraction, {**stage, "by_seed": {}})["by_seed"][str(seed)] = stage


class FreeRunningDev:
    """Free-running dev criteria: synthesize the dev sentences (one seeded batch, as
    :func:`evaluate_model` does for the test set, without a vocoder) and average their
    MCD-DTW-SL and stop-length error against the dev recordings.

    The teacher-forced dev loss does not see whether the model can stop by itself: a model
    with the lowest dev loss may run every sentence to the length guard. These criteria do.

    Args:
        rows: the dev rows (``id``, ``text``, ``audio``); their recordings are loaded once.
        config: the model's :class:`TacotronConfig` (mel settings of the references).
        speaker: the target speaker id the dev sentences are synthesized for.

    Example:
        >>> dev = FreeRunningDev(dev_rows, model.config, speaker=0)  # doctest: +SKIP
        >>> dev(model)  # doctest: +SKIP
        {'free_mcd_dtw_sl_db': 9.1, 'free_stop_length_error': 1.2, 'free_stopped': 0.25}
    """

    def __init__(
        self,
        rows: Sequence[Mapping],
        config: TacotronConfig,
        speaker: int,
        *,
        seed: int = 0,
        max_length_ratio: float = 3.0,
        batch_size: int = 0,
    ) -> None:
        if not rows:
            raise ValueError("the free-running dev criterion needs dev rows")
        self.sentences = [
            TestSentence(str(row["id"]), row["text"], "dev", math.nan, row["audio"]) for row in rows
        ]
        self.references = load_references(self.sentences, config, with_f0=False)
        self.speaker = speaker
        self.seed = seed
        self.max_length_ratio = max_length_ratio
        self.batch_size = batch_size or len(rows)  # one batch by default

    def __call__(self, model: TacotronTTS) -> dict[str, float]:
        """``{"free_mcd_dtw_sl_db", "free_stop_length_error", "free_stopped"}``: means over
        the dev sentences. The caller's torch RNG and train/eval mode are left unchanged."""
        was_training = model.training
        with torch.random.fork_rng(devices=[]):  # synthesis reseeds; training's stream stays
            rows, _ = evaluate_model(
                model,
                self.speaker,
                self.sentences,
                None,  # no vocoder: MCD is on the predicted mel, stop on its length
                None,
                seed=self.seed,
                max_length_ratio=self.max_length_ratio,
                with_f0=False,
                batch_size=self.batch_size,
                references=self.references,
            )
        model.train(was_training)
        return {
            "free_mcd_dtw_sl_db": float(np.mean([row["mcd_dtw_sl_db"] for row in rows])),
            "free_stop_length_error": float(np.mean([row["stop_length_error"] for row in rows])),
            "free_stopped": float(np.mean([bool(row["stopped"]) for row in rows])),
        }


class _DevTrainer(Trainer):
    """The shared Trainer whose dev evaluation adds the free-running criteria (when
    ``free_running_dev`` is set), so that early stopping, ``best.pt``, ``metrics.jsonl``
    and ``curves.png`` all see them like the dev loss."""

    free_running_dev: FreeRunningDev | None = None

    def evaluate(self, loader) -> dict[str, float]:
        results = super().evaluate(loader)
        if self.free_running_dev is not None and loader is self.valid_loader:
            # every rank synthesizes the same seeded batch with the same weights: no reduce
            results.update(self.free_running_dev(self.model))
        return results


def dev_curve(run_dir: str | Path) -> list[dict]:
    """The dev evaluations of a Trainer folder's ``metrics.jsonl``: one ``{"step", "loss",
    ...criteria}`` row per evaluation, in step order (the last run's rows for a step)."""
    rows = {}
    for row in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if row.get("split") == "valid":
            rows[int(row["step"])] = {key: value for key, value in row.items() if key != "split"}
    return [rows[step] for step in sorted(rows)]


def _loader(rows, model: TacotronTTS, speaker_ids, default_speaker, batch_size, seed, workers):
    dataset = TTSDataset(
        rows,
        model.config.sample_rate,
        speaker_ids=speaker_ids,
        frontend=model.frontend,
        default_speaker=default_speaker,
    )
    info = distributed.get_info()
    sampler = None
    per_rank = len(dataset)
    if info.world_size > 1:
        # under torchrun each rank trains on its own share of the clips (reshuffled every
        # epoch: the Trainer calls sampler.set_epoch)
        sampler = torch.utils.data.DistributedSampler(
            dataset, info.world_size, info.rank, shuffle=True, seed=seed, drop_last=True
        )
        per_rank = len(sampler)
    # a 1/8 subset of a small pool can hold fewer clips than a batch: cap the batch there
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, min(batch_size, per_rank)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_tts,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
    )


def train_tts(
    model: TacotronTTS,
    rows: Sequence[Mapping],
    run_dir: str | Path,
    trainer_config,
    optim_config,
    *,
    max_steps: int,
    batch_size: int,
    speaker_ids: Mapping[str, int] | None = None,
    default_speaker: int = 0,
    full_config=None,
    seed: int = 0,
    dev_rows: Sequence[Mapping] = (),
    eval_every: int = 0,
    patience: int = 0,
    min_delta: float = 0.0,
    select_on: str = "dev_loss",
    free_running_dev: FreeRunningDev | None = None,
) -> tuple[Path, dict]:
    """Train ``model`` on ``rows`` for at most ``max_steps`` with the shared Trainer.

    With ``dev_rows`` the dev set is evaluated every ``eval_every`` steps (and at the end):
    the teacher-forced loss, plus, with ``free_running_dev``, the free-running criteria of
    :class:`FreeRunningDev` (``free_mcd_dtw_sl_db``, ``free_stop_length_error``,
    ``free_stopped``). ``select_on`` (:data:`SELECT_ON`: ``dev_loss``, ``dev_mcd``,
    ``dev_stop``) names the criterion: training stops once it has not improved by
    ``min_delta`` for ``patience`` evaluations, and ``model`` ends holding the weights best
    on it (``best.pt``, the returned checkpoint). Returns the checkpoint path and the
    Trainer's result (``stop_reason``, ``best_step``, ``best_value`` = the best criterion
    value, ``select_on``, ``criterion`` = its metric name...). A finished run directory is
    resumed (and so not trained again) by ``trainer.resume=auto``.
    """
    if not rows:
        raise ValueError("no training rows")
    criterion = selection_metric(select_on)
    if criterion != "loss" and free_running_dev is None:
        raise ValueError(f"finetune.select_on={select_on} needs the free-running dev synthesis")
    stopping = {"metric": criterion, "mode": "min", "patience": patience, "min_delta": min_delta}
    trainer_config = replace(
        to_dataclass(trainer_config, TrainerConfig),
        max_steps=max_steps,
        max_epochs=0,
        eval_every=min(eval_every, max_steps) if dev_rows else 0,
        early_stopping=to_dataclass(stopping if dev_rows else {}, EarlyStoppingConfig),
    )
    loader = _loader(
        rows, model, speaker_ids, default_speaker, batch_size, seed, trainer_config.num_workers
    )
    dev_loader = None
    if dev_rows:
        dev_set = TTSDataset(
            dev_rows,
            model.config.sample_rate,
            speaker_ids=speaker_ids,
            frontend=model.frontend,
            default_speaker=default_speaker,
        )
        dev_loader = torch.utils.data.DataLoader(
            dev_set, batch_size=max(1, min(batch_size, len(dev_set))), collate_fn=collate_tts
        )
    trainer = _DevTrainer(
        model,
        loader,
        valid_loader=dev_loader,
        trainer_cfg=trainer_config,
        optim_cfg=optim_config,
        full_config=full_config,
        run_dir=run_dir,
        sample_rate=model.config.sample_rate,
    )
    trainer.free_running_dev = free_running_dev if dev_rows else None
    result = trainer.fit()
    checkpoint = Path(run_dir) / "checkpoints" / f"step_{trainer.step:08d}.pt"
    if not checkpoint.is_file():
        checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if dev_rows and best.is_file():  # evaluate and hand on the best dev-loss weights
        model.load_state_dict(load_torch_file(best, "checkpoint")["model"])
        checkpoint = best
    # the dev criteria at every evaluation (also drawn in run_dir/curves.png)
    extra = {"select_on": select_on, "criterion": criterion} if dev_rows else {}
    if dev_rows:
        extra["dev_curve"] = dev_curve(run_dir)
    return Path(checkpoint), {
        **result,
        "steps_run": trainer.step,
        "max_steps": max_steps,
        **extra,
    }


def max_parameter_difference(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> float:
    """Largest ``|model parameter - state_dict entry|`` over the entries of ``state_dict``
    whose shapes match the model's (the grown speaker table is compared row by row)."""
    largest = 0.0
    own = model.state_dict()
    for name, value in state_dict.items():
        mine = own[name]
        if mine.shape != value.shape:  # speaker table: the pre-trained rows come first
            mine = mine[: value.shape[0]]
        largest = max(largest, float((mine.float() - value.float()).abs().max()))
    return largest


def finetune_model(
    config: TacotronConfig, checkpoint: str | Path | None, speaker_init: str = "mean", seed: int = 0
) -> tuple[TacotronTTS, int, float]:
    """The model fine-tuning starts from, its target speaker id, and the check
    ``max |parameter - pre-trained parameter|`` (0.0 when loaded exactly; NaN without one).

    Without a checkpoint (fraction 0) it is a fresh one-speaker model (speaker 0). With one,
    the model is built with the checkpoint's Tacotron config, loads the pre-trained weights
    and appends a speaker vector for the target (``speaker_init``: ``mean`` or ``random``).
    """
    if checkpoint is None:
        torch.manual_seed(seed)
        return TacotronTTS(replace(config, num_speakers=1)), 0, float("nan")
    state = load_torch_file(checkpoint, "checkpoint")
    spec = state.get("config", {}).get("tts_model")
    pretrained_config = TacotronConfig(**spec) if spec else config
    model = TacotronTTS(pretrained_config)
    model.load_pretrained(state["model"])
    difference = max_parameter_difference(model, state["model"])
    speaker = model.add_speaker(init=speaker_init, seed=seed)
    return model, speaker, difference
