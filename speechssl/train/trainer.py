"""The one training engine of every recipe.

``Trainer`` drives a model whose ``forward(batch)`` returns ``(loss, metrics)``:
AdamW (fused on CUDA) with warmup + decay, gradient accumulation and clipping,
bf16/fp16 autocast (fp16 with a grad scaler; both also run on a CPU, where fp16 is slow and
serves to test the GPU path), optional ``torch.compile``, DDP under torchrun, periodic
evaluation with early stopping, atomic checkpoints with exact resume, and feedback
(progress bar, TensorBoard, ``metrics.jsonl``, ``curves.png``).

Run directory::

    run_dir/config.yaml                 the resolved configuration
    run_dir/checkpoints/step_XXXXXXXX.pt the last ``keep_last`` checkpoints (+ best.pt)
    run_dir/metrics.jsonl               one row per logged step / evaluation
    run_dir/tb/                         TensorBoard scalars
    run_dir/curves.png                  training curves, written at the end
    run_dir/skipped.jsonl               utterances the dataset could not load

Example (the same script runs under ``torchrun --nproc_per_node=N``):
    >>> import tempfile, torch
    >>> from speechssl.train import Trainer, TrainerConfig, OptimConfig
    >>> class Regression(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.linear = torch.nn.Linear(3, 1)
    ...     def forward(self, batch):
    ...         x, y = batch
    ...         loss = torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)
    ...         return loss, {}
    >>> data = [(torch.randn(8, 3), torch.randn(8)) for _ in range(4)]
    >>> trainer = Trainer(Regression(), data, trainer_cfg=TrainerConfig(max_steps=6,
    ...     log_every=2, tensorboard=False, device="cpu"), optim_cfg=OptimConfig(lr=1e-2),
    ...     run_dir=tempfile.mkdtemp(), show_progress=False)
    >>> result = trainer.fit()
    >>> result["step"], result["stop_reason"]
    (6, 'max_steps')
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from speechssl.checkpoint_format import Checkpoint, EncoderSpec
from speechssl.data.dataset import append_skipped
from speechssl.safe_io import (
    RunDirBusyError,
    RunLock,
    remove_orphaned_temporaries,
    write_text_atomic,
)
from speechssl.train import distributed
from speechssl.train.checkpoint import (
    capture_rng_state,
    check_resumable,
    check_resume_config,
    choose_resume_checkpoint,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from speechssl.train.config import (
    Device,
    Mode,
    OptimConfig,
    Precision,
    TrainerConfig,
)
from speechssl.train.curves import plot_curves
from speechssl.train.progress import (
    LoopState,
    ProgressWriter,
    new_window,
    window_means,
    window_sums,
)
from speechssl.train.schedule import build_optimizer, build_scheduler
from speechssl.typed import to_dataclass

__all__ = ["LoopState", "NonFiniteLossError", "Trainer", "seed_everything"]


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses in a row; a checkpoint was written before raising."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_trainer_config(cfg: TrainerConfig) -> None:
    """Range checks OmegaConf's types cannot express; one clear line each."""
    if cfg.max_steps < 0 or cfg.max_epochs < 0:
        raise ValueError("trainer.max_steps and trainer.max_epochs must be >= 0")
    if cfg.max_steps == 0 and cfg.max_epochs == 0:
        raise ValueError("set trainer.max_steps or trainer.max_epochs (both are 0)")
    if cfg.grad_accum < 1:
        raise ValueError(f"trainer.grad_accum must be >= 1, got {cfg.grad_accum}")
    if cfg.log_every < 1 or cfg.checkpoint_every < 1:
        raise ValueError("trainer.log_every and trainer.checkpoint_every must be >= 1")
    if cfg.eval_every < 0 or cfg.keep_last < 0 or cfg.clip_norm < 0:
        raise ValueError("trainer.eval_every, keep_last and clip_norm must be >= 0")
    if cfg.max_consecutive_nonfinite < 1:
        raise ValueError("trainer.max_consecutive_nonfinite must be >= 1")


def _to_device(batch, device: torch.device):
    """Move a batch (anything with ``.to``, or tuples/lists/dicts of tensors) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(item, device) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    return batch.to(device)


def _batch_size(batch) -> int | None:
    """Items in a batch: ``lengths.numel()``, else ``len(batch)`` of a batch object that has
    a length (e.g. cached vectors), else None (a plain tuple, list or dict of tensors).

    Evaluation weighs each batch's metrics by it, so every dev item counts once whatever
    the batch size (a short last batch weighs what it holds, not a whole batch)."""
    lengths = getattr(batch, "lengths", None)
    if lengths is not None:
        return int(lengths.numel())
    if isinstance(batch, (tuple, list, dict)) or not callable(getattr(batch, "__len__", None)):
        return None
    return len(batch)


class Trainer:
    """Train ``model`` on ``train_loader``; see the module docstring for the run directory.

    Args:
        model: ``forward(batch) -> (loss scalar Tensor, metrics dict of floats/0-dim
            Tensors)``. If it has an ``encoder`` attribute with ``spec()``, checkpoints
            carry ``encoder_spec`` so ``speechssl.load_encoder`` can rebuild it.
        train_loader: a DataLoader (or any iterable of batches). Its ``batch_sampler``,
            ``sampler`` and ``dataset`` get ``set_epoch(epoch)`` when they have it. A batch
            sampler with ``state_dict()``/``load_state_dict()`` whose state holds ``epoch``
            and ``batches_consumed`` (``speechssl.data.sampler.DurationBucketSampler``)
            resumes itself without reading audio; otherwise a resumed run draws and drops
            the batches already trained on (the sampler must be deterministic given its
            seed/generator and epoch, e.g. ``DataLoader(shuffle=True, generator=...)``).
        valid_loader: evaluated every ``trainer.eval_every`` steps and at the end.
        trainer_cfg, optim_cfg: ``TrainerConfig``/``OptimConfig`` or mappings (checked).
        full_config: the whole run configuration to write to ``config.yaml`` and into
            every checkpoint (default: ``{"trainer": ..., "optim": ...}``).
        run_dir: output folder; default ``trainer.run_dir``, else Hydra's output folder.
        sample_rate: for the audio-seconds throughput; default ``train_loader.dataset.sample_rate``.
        show_progress: draw the progress bar (rank 0 only in any case; plain lines in a log file).
        resume_ignores: prefixes of ``full_config`` keys this training does not read (a
            recipe's downstream sections): a resume under other values of them is allowed.
            Any other changed key refuses the resume in one line
            (:func:`speechssl.train.checkpoint.check_resume_config`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_loader: Iterable,
        valid_loader: Iterable | None = None,
        trainer_cfg: TrainerConfig | dict | DictConfig | None = None,
        optim_cfg: OptimConfig | dict | DictConfig | None = None,
        full_config: dict | DictConfig | None = None,
        run_dir: str | Path | None = None,
        sample_rate: int | None = None,
        show_progress: bool = True,
        resume_ignores: tuple[str, ...] = (),
    ) -> None:
        self.cfg: TrainerConfig = to_dataclass(trainer_cfg, TrainerConfig)
        self.optim_cfg: OptimConfig = to_dataclass(optim_cfg, OptimConfig)
        _check_trainer_config(self.cfg)
        self.precision = Precision(self.cfg.precision)
        self.dist = distributed.init_from_env(Device(self.cfg.device).value)
        self.device = self._pick_device()
        self.run_dir = self._pick_run_dir(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.train_loader = train_loader
        self.valid_loader = valid_loader
        dataset = getattr(train_loader, "dataset", None)
        self.sample_rate = sample_rate or getattr(dataset, "sample_rate", None)
        self.show_progress = show_progress
        self.resume_ignores = tuple(resume_ignores)
        self.config = self._resolve_config(full_config)

        self.model = model.to(self.device)
        self.optimizer = build_optimizer(self.model, self.optim_cfg)  # also freezes prefixes
        self.total_steps = self._total_steps()
        self.scheduler = build_scheduler(self.optimizer, self.optim_cfg, self.total_steps)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.precision == Precision.fp16
        )
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.forward_model: torch.nn.Module = self.model
        if self.dist.is_distributed:
            self.forward_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.find_unused_parameters,
            )
        if self.cfg.compile:
            self.forward_model = torch.compile(self.forward_model)

        self.loop = LoopState()  # saved in checkpoints under "trainer"
        self._last_good_batch = None
        self._window: dict | None = None  # the log window in progress (set by fit)
        self._skipped_records: list[dict] = []

    @property
    def step(self) -> int:
        """Optimiser steps done (``self.loop.step``)."""
        return self.loop.step

    # --------------------------------------------------------------------------- set-up
    def _pick_device(self) -> torch.device:
        wanted = Device(self.cfg.device)
        if wanted == Device.cuda and not torch.cuda.is_available():
            raise ValueError(
                "trainer.device=cuda but CUDA is not available; use trainer.device=cpu"
            )
        if wanted == Device.cpu or not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", self.dist.local_rank)

    def _pick_run_dir(self, run_dir) -> Path:
        chosen = run_dir or self.cfg.run_dir
        if not chosen:
            from hydra.core.hydra_config import HydraConfig

            if not HydraConfig.initialized():
                raise ValueError("no run directory: pass run_dir= or set trainer.run_dir")
            chosen = HydraConfig.get().runtime.output_dir
        return Path(chosen)

    def _resolve_config(self, full_config) -> dict:
        if full_config is None:
            full_config = {
                "trainer": OmegaConf.structured(self.cfg),
                "optim": OmegaConf.structured(self.optim_cfg),
            }
        container = (
            OmegaConf.create(full_config)
            if not isinstance(full_config, DictConfig)
            else full_config
        )
        return OmegaConf.to_container(container, resolve=True, enum_to_str=True)

    def _epoch_length(self) -> int:
        try:
            return len(self.train_loader)
        except TypeError:
            raise ValueError("trainer.max_steps=0 needs a train_loader with len()") from None

    def _total_steps(self) -> int:
        if self.cfg.max_steps > 0:
            return self.cfg.max_steps
        return math.ceil(self.cfg.max_epochs * self._epoch_length() / self.cfg.grad_accum)

    # ----------------------------------------------------------------------------- data
    def _batch_sampler(self):
        return getattr(self.train_loader, "batch_sampler", None)

    def _resumable_sampler(self) -> bool:
        sampler = self._batch_sampler()
        return callable(getattr(sampler, "state_dict", None)) and callable(
            getattr(sampler, "load_state_dict", None)
        )

    def _set_epoch(self, epoch: int) -> None:
        seen = set()
        for owner in (
            self._batch_sampler(),
            getattr(self.train_loader, "sampler", None),
            getattr(self.train_loader, "dataset", None),
        ):
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch) and id(owner) not in seen:
                seen.add(id(owner))
                set_epoch(epoch)

    def _epoch_iterator(self, skip: int) -> Iterator:
        """This epoch's batches, without the first ``skip`` (already trained on).

        A resumable batch sampler skips them itself (no audio read). Otherwise they are
        drawn and dropped, with every random stream saved and restored around it: the
        restored checkpoint state already includes whatever those batches drew, and the
        loader's own generator advances exactly as in the interrupted run.
        """
        iterator = self._iterate(self.train_loader)
        if skip and not self._resumable_sampler():
            rng_state = capture_rng_state()
            for _ in itertools.islice(iterator, skip):
                pass
            restore_rng_state(rng_state)
        return iterator

    @staticmethod
    def _iterate(loader) -> Iterator:
        # Creating a DataLoader iterator draws a worker seed from the global torch RNG;
        # fork it so a resumed run (which creates its iterator mid-epoch) keeps the
        # same random stream as an uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            return iter(loader)

    def _batches(self) -> Iterator:
        """Batches across epochs until ``max_epochs``; updates ``epoch``/``batches_consumed``."""
        while self.cfg.max_epochs == 0 or self.loop.epoch < self.cfg.max_epochs:
            self._set_epoch(self.loop.epoch)
            produced = False
            for batch in self._epoch_iterator(self.loop.batches_consumed):
                produced = True
                self.loop.batches_consumed += 1
                yield batch
            if not produced and self.loop.batches_consumed == 0:
                raise ValueError("the training loader yielded no batch in a whole epoch")
            self.loop.epoch += 1
            self.loop.batches_consumed = 0

    # ----------------------------------------------------------------------------- step
    def _autocast(self):
        if self.precision == Precision.fp32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == Precision.bf16 else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict]:
        with self._autocast():
            output = model(batch)
        if not (isinstance(output, tuple) and len(output) == 2):
            raise ValueError("model.forward(batch) must return (loss, metrics dict)")
        loss, metrics = output
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise ValueError(
                f"the model's loss must be a scalar tensor, got {getattr(loss, 'shape', loss)}"
            )
        return loss, metrics

    def _train_step(self, micro_batches: list, window: dict) -> bool:
        """Forward/backward over the micro-batches and one optimiser update.

        Returns False when the update was skipped for a non-finite loss or gradient.
        """
        count = len(micro_batches)
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, torch.Tensor] = {}
        used = 0
        for index, batch in enumerate(micro_batches):
            self._count_throughput(batch, window)  # also collects the unreadable files
            if _batch_size(batch) == 0:  # every utterance of the batch was unreadable
                if not self.dist.is_distributed:
                    continue
                # DDP needs every rank in every gradient all-reduce: rerun the previous
                # batch with a zero weight instead of skipping.
                if self._last_good_batch is None:
                    raise ValueError(
                        "the first training batch of a rank is empty (all files unreadable)"
                    )
                batch, weight = self._last_good_batch, 0.0
            else:
                batch, weight = _to_device(batch, self.device), 1.0
                if self.dist.is_distributed:
                    self._last_good_batch = batch
            last = index == count - 1
            sync = contextlib.nullcontext()
            if self.dist.is_distributed and not last:
                sync = self.forward_model.no_sync()  # all-reduce gradients once per step
            with sync:
                loss, metrics = self._forward(self.forward_model, batch)
                self.scaler.scale(loss * (weight / count)).backward()
            if weight:
                used += 1
                loss_sum += loss.detach().float()
                for key, value in metrics.items():
                    value = torch.as_tensor(value, device=self.device, dtype=torch.float32).detach()
                    metric_sums[key] = metric_sums.get(key, 0.0) + value
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
        bad = ~torch.isfinite(loss_sum)
        if self.precision != Precision.fp16:  # fp16 overflow is the grad scaler's business
            bad = bad | ~torch.isfinite(grad_norm)
        bad = bad.float()
        if self.dist.is_distributed:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        skipped = bool(bad.item())  # the one host sync of a step
        if not skipped:
            self.scaler.step(self.optimizer)
        self.scaler.update()  # also resets the scaler's per-step state after a skip
        self.optimizer.zero_grad(set_to_none=True)
        window["lr"] = self.optimizer.param_groups[0]["lr"]  # the lr this step used
        with warnings.catch_warnings():
            # after a skipped first update torch warns that the scheduler stepped first
            warnings.filterwarnings(
                "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
            )
            self.scheduler.step()
        if not skipped and used:
            window["steps"] += 1
            window["loss"] += loss_sum / used
            window["grad_norm"] += grad_norm.detach().float()
            for key, value in metric_sums.items():
                window["metrics"][key] = window["metrics"].get(key, 0.0) + value / used
        return not skipped

    def _count_throughput(self, batch, window: dict) -> None:
        lengths = getattr(batch, "lengths", None)
        if lengths is not None:
            window["utterances"] += lengths.numel()
            if self.sample_rate:
                window["audio_seconds"] += float(lengths.sum()) / self.sample_rate
        for record in getattr(batch, "skipped", None) or []:
            self._skipped_records.append(record)

    def _log_window(self, window: dict, writer: ProgressWriter) -> dict:
        row = {"step": self.loop.step, "split": "train", "epoch": self.loop.epoch}
        row.update(distributed.all_reduce_mean(window_means(window)))
        totals = distributed.all_reduce_sum(
            {
                "utterances": window["utterances"],
                "audio_seconds": window["audio_seconds"],
                "skipped_utterances": len(self._skipped_records),
            }
        )
        elapsed = max(time.perf_counter() - window["start"], 1e-9)
        if totals["utterances"]:
            row["utterances_per_s"] = totals["utterances"] / elapsed
        if totals["audio_seconds"]:
            row["audio_s_per_s"] = totals["audio_seconds"] / elapsed
        row["lr"] = window.get("lr", self.optimizer.param_groups[0]["lr"])
        row["nonfinite_steps"] = self.loop.nonfinite_total
        if totals["skipped_utterances"]:
            row["skipped_utterances"] = int(totals["skipped_utterances"])
            self._write_skipped()
        writer.log(row)
        self.loop.train_loss = float(row["loss"]) if "loss" in row else None
        return row

    def _write_skipped(self) -> None:
        records = [
            r
            for rank_records in distributed.gather_objects(self._skipped_records)
            for r in rank_records
        ]
        self._skipped_records = []
        if distributed.is_main():
            append_skipped(self.run_dir / "skipped.jsonl", records)

    # ------------------------------------------------------------------------ evaluate
    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> dict[str, float]:
        """Mean ``loss`` and model metrics over ``loader``, weighted by utterances.

        Under DDP every rank evaluates its shard and the sums are reduced. The torch RNG
        is forked, so evaluating does not change the training's random stream.
        """
        model = self.model  # not the DDP wrapper: ranks may have unequal shard lengths
        was_training = model.training
        model.eval()
        sums: dict[str, float | torch.Tensor] = {"loss": 0.0}
        weight_total = 0.0
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for batch in self._iterate(loader):
                weight = _batch_size(batch)
                if weight == 0:
                    continue
                weight = 1 if weight is None else weight
                loss, metrics = self._forward(model, _to_device(batch, self.device))
                sums["loss"] = sums["loss"] + loss.detach().float() * weight
                for key, value in metrics.items():
                    value = torch.as_tensor(value, device=self.device, dtype=torch.float32)
                    sums[key] = sums.get(key, 0.0) + value * weight
                weight_total += weight
        model.train(was_training)
        sums["_weight"] = weight_total
        totals = distributed.all_reduce_sum(sums)
        weight_total = totals.pop("_weight")
        if weight_total == 0:
            raise ValueError("the evaluation loader yielded no utterance")
        return {key: value / weight_total for key, value in totals.items()}

    def _evaluate_and_track(self, writer: ProgressWriter) -> bool:
        """Evaluate, log, keep best.pt; returns True when early stopping says stop."""
        results = {key: float(value) for key, value in self.evaluate(self.valid_loader).items()}
        self.loop.last_evaluation = results
        writer.log({"step": self.loop.step, "split": "valid", **results})
        stopping = self.cfg.early_stopping
        if not stopping.metric:
            return False
        if stopping.metric not in results:
            raise ValueError(
                f"trainer.early_stopping.metric={stopping.metric!r} is not an evaluation metric "
                f"({sorted(results)})"
            )
        value = results[stopping.metric]
        sign = 1.0 if Mode(stopping.mode) == Mode.min else -1.0
        improved = (
            self.loop.best_value is None
            or sign * (self.loop.best_value - value) > stopping.min_delta
        )
        if improved:
            self.loop.best_value, self.loop.best_step, self.loop.bad_evaluations = (
                value,
                self.loop.step,
                0,
            )
            self._save(name="best.pt")
            return False
        self.loop.bad_evaluations += 1
        return stopping.patience > 0 and self.loop.bad_evaluations >= stopping.patience

    # ---------------------------------------------------------------------- checkpoints
    def _trainer_state(self) -> dict:
        return {**self.loop.state_dict(), "world_size": self.dist.world_size}

    def _sampler_state(self) -> dict:
        state = {}
        if self._resumable_sampler():
            state = dict(self._batch_sampler().state_dict())
        # the loop's count, not the sampler's: a DataLoader prefetches ahead of the loop
        state.update(epoch=self.loop.epoch, batches_consumed=self.loop.batches_consumed)
        return state

    def _save(self, name: str | None = None, prune: bool = True) -> Path | None:
        """Write a checkpoint (collective: every rank must call it; rank 0 writes)."""
        rng_states = distributed.gather_objects(capture_rng_state())
        self.loop.windows = distributed.gather_objects(window_sums(self._window or new_window()))
        path = None
        if distributed.is_main():
            encoder = getattr(self.model, "encoder", None)
            record = Checkpoint(
                model=self.model.state_dict(),
                step=self.loop.step,
                epoch=self.loop.epoch,
                config=self.config,
                trainer=self._trainer_state(),
                # a model that keeps an encoder at model.encoder: load_encoder rebuilds it
                encoder_spec=EncoderSpec.of(encoder, prefix="encoder.")
                if callable(getattr(encoder, "spec", None))
                else None,
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                sampler=self._sampler_state(),
                rng=rng_states,
            )
            path = save_checkpoint(record, self.checkpoint_dir, self.loop.step, name=name)
            if name is None and prune:
                prune_checkpoints(self.checkpoint_dir, self.cfg.keep_last)
        distributed.barrier()
        return path

    def _resume(self) -> Path | None:
        """Load the checkpoint ``trainer.resume`` names (:func:`choose_resume_checkpoint`);
        returns its path (None: a fresh run). A checkpoint whose config differs from this
        run's is refused in one line (:func:`check_resume_config`)."""
        path, state = choose_resume_checkpoint(
            self.cfg.resume,
            self.checkpoint_dir,
            lambda state: check_resumable(state, self.model, self.optimizer),
        )
        if path is None:
            return None
        check_resume_config(
            path,
            Checkpoint.from_dict(state, str(path)),
            self.config,
            max_steps=self.cfg.max_steps,
            max_epochs=self.cfg.max_epochs,
            ignore=self.resume_ignores,
        )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        scheduler_state = dict(state["scheduler"])
        # the schedule comes from the current config (e.g. a raised max_steps), not the file
        scheduler_state["lr_lambdas"] = [None] * len(self.optimizer.param_groups)
        self.scheduler.load_state_dict(scheduler_state)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loop.load_state_dict(
            {**(state.get("trainer") or {}), "step": state["step"], "epoch": state["epoch"]}
        )
        if self._resumable_sampler():
            self._batch_sampler().load_state_dict(state["sampler"])
        rng_states = state.get("rng") or []
        if len(rng_states) == self.dist.world_size:
            restore_rng_state(rng_states[self.dist.rank])
        else:
            warnings.warn(
                f"{path}: saved with {len(rng_states)} ranks, running with {self.dist.world_size}: "
                "random streams are re-seeded, the run continues but not bit-exactly",
                stacklevel=2,
            )
            seed_everything(self.cfg.seed + self.dist.rank + self.loop.step)
        return path

    def _diverged(self) -> str:
        """Save the last good weights (skipped updates left them untouched; no older
        checkpoint is pruned) and return the one line that says so, with the hints."""
        path = self._save(prune=False)
        hint = "lower optim.lr (or raise optim.warmup_steps) or set trainer.clip_norm"
        if self.precision != Precision.fp32:
            hint += ", or use trainer.precision=fp32"
        return (
            f"training diverged at step {self.loop.step} ({self.loop.consecutive_nonfinite} "
            f"non-finite losses in a row); last good weights: {path}; {hint}"
        )

    def _write_config(self) -> None:
        if distributed.is_main():
            write_text_atomic(
                self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(self.config))
            )

    # ----------------------------------------------------------------------------- fit
    def fit(self) -> dict:
        """Train until ``max_steps``/``max_epochs``, early stopping or too many non-finite losses.

        Returns:
            ``{"step", "epoch", "stop_reason", "nonfinite_steps", "train_loss",
            "valid/<metric>"..., "best_value", "best_step"}``; ``stop_reason`` is one of
            ``max_steps``, ``max_epochs``, ``early_stopping``.

        Raises:
            NonFiniteLossError: ``max_consecutive_nonfinite`` steps in a row had a
                non-finite loss (a checkpoint is written first).
        """
        # trainer.threads holds for this run only: the caller's thread count comes back
        previous_threads = torch.get_num_threads()
        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        # one run at a time in a run directory (rank 0 holds the lock for its ranks)
        lock = RunLock(self.run_dir)
        refusal = None
        if distributed.is_main():
            try:
                lock.acquire()
            except (OSError, ValueError) as error:  # busy, or no folder can be made there
                refusal = error
        # every rank stops when rank 0 could not lock, so none waits in a collective
        message = distributed.gather_objects(None if refusal is None else str(refusal))[0]
        if refusal is not None:
            raise refusal
        if message is not None:
            raise RunDirBusyError(message)
        try:
            return self._fit()
        finally:
            lock.release()
            torch.set_num_threads(previous_threads)

    def _fit(self) -> dict:
        # a writer killed mid-write leaves its temporary file; under the lock none is live
        orphans = []
        if distributed.is_main():
            for folder in (self.run_dir, self.checkpoint_dir):
                orphans += remove_orphaned_temporaries(folder)
        resumed_from = self._resume()
        if resumed_from is None:
            seed_everything(self.cfg.seed + self.dist.rank)
        self._write_config()
        writer = ProgressWriter(
            self.run_dir,
            total_steps=self.total_steps,
            initial_step=self.loop.step,
            enabled=distributed.is_main(),
            tensorboard=self.cfg.tensorboard,
            show_bar=self.show_progress,
        )
        if orphans:
            writer.message(
                f"removed {len(orphans)} temporary file(s) of an interrupted checkpoint write: "
                + ", ".join(path.name for path in orphans)
            )
        if resumed_from is not None:
            writer.message(f"resumed from {resumed_from} at step {self.loop.step}")
        self.model.train()
        batches = self._batches()
        window = self._window = new_window()
        if resumed_from is not None and len(self.loop.windows) == self.dist.world_size:
            window.update(self.loop.windows[self.dist.rank])  # the window the kill cut
        stop_reason = "max_steps" if self.cfg.max_steps else "max_epochs"
        # a checkpoint is written after its step's evaluation: a run resumed at its last
        # step has nothing left to do
        last_saved = last_evaluated = self.loop.step if resumed_from is not None else -1
        try:
            while self.loop.step < self.total_steps:
                micro_batches = list(itertools.islice(batches, self.cfg.grad_accum))
                if not micro_batches:
                    stop_reason = "max_epochs"
                    break
                updated = self._train_step(micro_batches, window)
                self.loop.step += 1
                writer.advance()
                if updated:
                    self.loop.consecutive_nonfinite = 0
                else:
                    self.loop.nonfinite_total += 1
                    self.loop.consecutive_nonfinite += 1
                    # info, not a warning: the stop below, or the count at the end, is the line
                    writer.message(
                        f"step {self.loop.step}: non-finite loss or gradient, update skipped "
                        f"({self.loop.consecutive_nonfinite} in a row, {self.loop.nonfinite_total} in total)"
                    )
                if self.loop.step % self.cfg.log_every == 0 or self.loop.step == self.total_steps:
                    self._log_window(window, writer)
                    window = self._window = new_window()
                if self.loop.consecutive_nonfinite >= self.cfg.max_consecutive_nonfinite:
                    raise NonFiniteLossError(self._diverged())
                stop = False
                if (
                    self.valid_loader is not None
                    and self.cfg.eval_every
                    and self.loop.step % self.cfg.eval_every == 0
                ):
                    stop = self._evaluate_and_track(writer)
                    last_evaluated = self.loop.step
                if self.loop.step % self.cfg.checkpoint_every == 0:
                    self._save()
                    last_saved = self.loop.step
                if window["steps"] == 0 and window["utterances"] == 0:
                    window["start"] = time.perf_counter()  # throughput leaves out eval/saving
                if stop:
                    stop_reason = "early_stopping"
                    writer.message(
                        f"early stopping at step {self.loop.step}: {self.cfg.early_stopping.metric} has not "
                        f"improved for {self.loop.bad_evaluations} evaluations (best {self.loop.best_value:.4g} "
                        f"at step {self.loop.best_step})"
                    )
                    break
            if self.valid_loader is not None and last_evaluated != self.loop.step:
                self._evaluate_and_track(writer)
                last_saved = -1  # the checkpoint of this step must carry its evaluation
            if last_saved != self.loop.step:
                self._save()
            if self.loop.nonfinite_total:
                writer.message(
                    f"{self.loop.nonfinite_total} update(s) skipped for a non-finite loss or "
                    "gradient (metrics.jsonl: nonfinite_steps)",
                    warning=True,
                )
        finally:
            writer.close()
            if distributed.is_main() and writer.metrics_path.exists():
                plot_curves(writer.metrics_path, self.run_dir / "curves.png")
        result = {
            "step": self.loop.step,
            "epoch": self.loop.epoch,
            "stop_reason": stop_reason,
            "nonfinite_steps": self.loop.nonfinite_total,
            "train_loss": float("nan") if self.loop.train_loss is None else self.loop.train_loss,
            **{f"valid/{key}": value for key, value in self.loop.last_evaluation.items()},
        }
        if self.loop.best_value is not None:
            result.update(best_value=self.loop.best_value, best_step=self.loop.best_step)
        return result
