"""The tpc recipe's pre-training stage on shards, for the subprocess (torchrun) test.

    python -m torch.distributed.run --standalone --nproc_per_node=2 shard_pretrain_script.py \
        SHARD_DIR RUN_DIR [hydra overrides ...]

Composes ``tpc`` with ``debug=tiny`` and ``pretrain.sources=[{corpus: shards, src: SHARD_DIR}]``
and calls the recipe's own ``pretrain(cfg, run_dir)``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from speechssl.config import compose
from speechssl.train import distributed

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "tpc" / "run.py"


def main() -> None:
    shard_dir, run_dir, *overrides = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("tpc_recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cfg = compose(
        "tpc",
        [
            "debug=tiny",
            f"run_dir={run_dir}",
            f"pretrain.sources=[{{corpus: shards, src: {shard_dir}}}]",
            *overrides,
        ],
    )
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    checkpoint, result = recipe.pretrain(cfg, Path(run_dir))
    if distributed.is_main():
        print(f"checkpoint {checkpoint} loss {result['train_loss']:.4f}")
    distributed.cleanup()


if __name__ == "__main__":
    main()
