"""Typed configuration of the training engine (Hydra structured configs).

``TrainerConfig`` is the ``trainer`` group and ``OptimConfig`` the ``optim`` group;
``speechssl.config.register_configs()`` puts both in Hydra's ConfigStore as
``trainer/trainer_schema`` and ``optim/optim_schema`` so that a YAML file such as
``conf/trainer/gpu.yaml`` only lists what it changes and a misspelt key or a value of
the wrong type fails when the config is composed, naming the key.

Example:
    >>> from speechssl.train.config import TrainerConfig, OptimConfig, ParamGroupConfig
    >>> trainer = TrainerConfig(max_steps=100, precision="bf16")
    >>> optim = OptimConfig(lr=5e-5, param_groups=[ParamGroupConfig(prefix="encoder.", lr_scale=0.1)])
    >>> optim.param_groups[0].lr_scale
    0.1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "Device",
    "EarlyStoppingConfig",
    "Mode",
    "OptimConfig",
    "ParamGroupConfig",
    "Precision",
    "Schedule",
    "TrainerConfig",
]


class Precision(str, Enum):
    """Numeric precision of the forward pass; bf16/fp16 use autocast, fp16 a grad scaler."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(str, Enum):
    """``auto`` picks CUDA when it is available (the local rank's GPU under torchrun)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Schedule(str, Enum):
    """Learning-rate schedule after the linear warmup (fairseq ``--lr-scheduler``)."""

    constant = "constant"  # fairseq: fixed (with warmup)
    linear = "linear"  # polynomial_decay with power 1
    polynomial = "polynomial"  # fairseq: polynomial_decay
    cosine = "cosine"  # fairseq: cosine (single cycle, no restarts)
    tri_stage = "tri_stage"  # fairseq: tri_stage (wav2vec 2.0 / HuBERT fine-tuning)


class Mode(str, Enum):
    """Whether a smaller (``min``, e.g. loss, EER) or larger (``max``, e.g. accuracy) metric is better."""

    min = "min"
    max = "max"


@dataclass
class EarlyStoppingConfig:
    """Stop when an evaluation metric has not improved for ``patience`` evaluations.

    ``metric`` names a key of ``Trainer.evaluate()`` (e.g. ``loss``, ``accuracy``); empty
    means no early stopping and no ``best.pt``. ``patience`` 0 keeps the best checkpoint
    but never stops early.
    """

    metric: str = ""
    mode: Mode = Mode.min
    patience: int = 0
    min_delta: float = 0.0


@dataclass
class TrainerConfig:
    """How the Trainer runs: length, precision, evaluation, checkpoints, logging.

    A *step* is one optimiser step over ``grad_accum`` micro-batches (fairseq: an update,
    ``--update-freq`` is ``grad_accum``); steps skipped for a non-finite loss still count.
    """

    max_steps: int = 1000  # fairseq: max_update; 0 -> derived from max_epochs
    max_epochs: int = 0  # fairseq: max_epoch; 0 -> no limit
    grad_accum: int = 1  # fairseq: update_freq
    clip_norm: float = 0.0  # fairseq: clip_norm; 0 -> no clipping (the norm is still logged)
    precision: Precision = Precision.fp32
    compile: bool = False  # torch.compile the model
    find_unused_parameters: bool = (
        False  # DDP: needed when some parameters get no gradient (layer drop)
    )
    eval_every: int = 0  # steps between evaluations; 0 -> only at the end
    checkpoint_every: int = 1000  # steps between checkpoints; one is always written at the end
    keep_last: int = 3  # step checkpoints kept on disk; 0 -> keep all
    resume: str = "auto"  # "auto" (newest valid checkpoint in run_dir), "none", or a file path
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    max_consecutive_nonfinite: int = 10  # stop the run after this many non-finite steps in a row
    log_every: int = 10  # steps between progress/TensorBoard/metrics.jsonl rows
    seed: int = 0  # each rank seeds with seed + rank
    device: Device = Device.auto
    num_workers: int = 2  # DataLoader workers (read by the recipe that builds the loaders)
    # torch CPU threads; 0 keeps torch's default. On a shared CPU, 1 avoids oversubscription
    # (it made the tiny demo models 10-20x faster on a loaded 2-core machine)
    threads: int = 0
    tensorboard: bool = True  # write TensorBoard scalars under run_dir/tb
    run_dir: str = ""  # empty -> the directory given to Trainer(), else Hydra's output dir


@dataclass
class ParamGroupConfig:
    """Optimiser settings for the parameters whose name starts with ``prefix``.

    The longest matching prefix wins; parameters matching none use ``OptimConfig``.
    ``lr_scale`` multiplies the learning rate (e.g. 0.05 for a pre-trained encoder under
    a fresh head); ``frozen`` sets ``requires_grad=False`` (e.g. the conv front end,
    fairseq ``feature_grad_mult: 0.0``).
    """

    prefix: str = ""
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None -> OptimConfig.weight_decay
    frozen: bool = False


@dataclass
class OptimConfig:
    """AdamW (fused on CUDA) with a warmup and a decay schedule.

    ``schedule`` runs over the trainer's ``max_steps``. Tri-stage follows fairseq's
    ``tri_stage``: ``phase_ratio`` splits the steps into warmup (from
    ``init_lr_scale * lr``), hold (``lr``) and exponential decay (to
    ``final_lr_scale * lr``); ``warmup_steps`` is then ignored.
    """

    lr: float = 5e-4  # fairseq: lr
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])  # fairseq: adam_betas
    eps: float = 1e-6  # fairseq: adam_eps
    weight_decay: float = 0.01  # fairseq: weight_decay (decoupled, AdamW)
    decay_bias_and_norm: bool = False  # False: 1-D parameters (biases, norms) get no decay
    fused: bool | None = None  # None -> fused kernel on CUDA, foreach on CPU
    warmup_steps: int = 0  # fairseq: warmup_updates
    schedule: Schedule = Schedule.cosine
    final_lr_scale: float = 0.0  # fairseq: final_lr_scale (tri_stage), end_learning_rate / lr
    power: float = 1.0  # fairseq: power (polynomial_decay)
    phase_ratio: list[float] | None = None  # fairseq: phase_ratio (tri_stage), e.g. [0.1, 0.4, 0.5]
    init_lr_scale: float = 0.01  # fairseq: init_lr_scale (tri_stage)
    param_groups: list[ParamGroupConfig] = field(default_factory=list)
