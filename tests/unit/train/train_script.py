"""A training job for the subprocess tests (SIGKILL + resume, torchrun DDP parity).

    python train_script.py CORPUS.json RUN_DIR [--interleave R] [--sleep S] [key=value ...]

``key=value`` pairs are trainer overrides (``max_steps=8``). Writes the final model
parameters to ``RUN_DIR/final_params.pt`` (rank 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_toy import NextFrameModel, make_interleaved_loader, make_loader

from speechssl.train import OptimConfig, Trainer, TrainerConfig, distributed, seed_everything
from speechssl.typed import to_dataclass


class SlowModel(NextFrameModel):
    """Sleeps in each training forward so a test can kill the process mid-run."""

    seconds = 0.0

    def forward(self, batch):
        if self.training and self.seconds:
            time.sleep(self.seconds)
        return super().forward(batch)


def run(corpus, run_dir, overrides=(), interleave=0, sleep=0.0, dropout=0.0) -> None:
    """Train the toy model; ``overrides`` are ``key=value`` trainer settings."""
    info = distributed.init_from_env("cpu")
    rows = json.loads(Path(corpus).read_text())
    if interleave:
        loader = make_interleaved_loader(rows, interleave)
    else:
        loader = make_loader(rows, info.rank, info.world_size)
    settings = dict(item.split("=", 1) for item in overrides)
    trainer_cfg = to_dataclass(
        {"device": "cpu", "log_every": 1, "tensorboard": False, "seed": 0, **settings},
        TrainerConfig,
    )
    seed_everything(0)  # identical initial weights in every run
    SlowModel.seconds = sleep
    model = SlowModel(dropout=dropout)
    optim = OptimConfig(lr=3e-3, warmup_steps=2, schedule="cosine", eps=1e-6)
    trainer = Trainer(
        model,
        loader,
        trainer_cfg=trainer_cfg,
        optim_cfg=optim,
        run_dir=run_dir,
        show_progress=False,
    )
    trainer.fit()
    if distributed.is_main():
        torch.save(model.state_dict(), Path(run_dir) / "final_params.pt")


def run_single_threaded(*args, **kwargs) -> None:
    """``run`` inside a test process, on one thread like the subprocesses (same float sums)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("run_dir")
    parser.add_argument("--interleave", type=int, default=0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    torch.set_num_threads(1)
    run(args.corpus, args.run_dir, args.overrides, args.interleave, args.sleep, args.dropout)
    distributed.cleanup()


if __name__ == "__main__":
    main()
