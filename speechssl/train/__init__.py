"""The training engine shared by every recipe: Trainer, configs, checkpoints, DDP helpers.

A recipe builds its model (``forward(batch) -> (loss, metrics)``) and loaders, then::

    from speechssl.train import Trainer, distributed
    info = distributed.init_from_env()          # before building the DDP-sharded sampler
    trainer = Trainer(model, train_loader, valid_loader, cfg.trainer, cfg.optim,
                      full_config=cfg, run_dir=cfg.trainer.run_dir or None)
    results = trainer.fit()
    distributed.cleanup()
"""

from speechssl.train.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from speechssl.train.config import (
    EarlyStoppingConfig,
    OptimConfig,
    ParamGroupConfig,
    TrainerConfig,
)
from speechssl.train.trainer import NonFiniteLossError, Trainer, seed_everything

CONFIG_SCHEMAS = {"trainer": {"trainer": TrainerConfig}, "optim": {"optim": OptimConfig}}

__all__ = [
    "CONFIG_SCHEMAS",
    "CheckpointError",
    "EarlyStoppingConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "ParamGroupConfig",
    "Trainer",
    "TrainerConfig",
    "UnsafeCheckpointError",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
