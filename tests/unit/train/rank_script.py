"""Rank-aware stages under torchrun, for test_run_on_main.py.

    python -m torch.distributed.run --standalone --nproc_per_node=2 rank_script.py OUT_DIR KEY=VALUE ...

Every rank runs, in one launch (one process start-up for both parts):

1. the hubert_sat recipe's iteration-1 target stage (``speechssl.train.hubert``;
   ``KEY=VALUE`` are the recipe's config overrides), with every k-means fit and
   labelling call logged to ``OUT_DIR/calls.log`` as ``<rank> <what>``;
2. the same calls of ``main_process_first``, ``run_on_main`` and
   ``continue_on_main_only`` (including failures on either rank), each write of a
   guarded file logged to ``OUT_DIR/writes.log``.

What each rank saw goes to ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from speechssl.train import distributed

REPO = Path(__file__).resolve().parents[3]


def _log(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:  # one short append: atomic enough
        file.write(line + "\n")


def write_once(path: Path, log: Path, rank: int) -> str:
    """Write ``path`` unless it exists (slowly, so an unguarded second rank would race)."""
    if not path.exists():
        _log(log, f"{rank} wrote {path.name}")
        time.sleep(0.3)
        path.write_text(f"written by rank {rank}")
    return path.read_text()


def failing(message: str):
    raise ValueError(message)


def _error(call) -> str | None:
    try:
        call()
    except (ValueError, RuntimeError) as error:  # the test checks the type and message
        return f"{type(error).__name__}: {error}"
    return None


def helpers(out: Path, rank: int) -> dict:
    log = out / "writes.log"
    seen: dict = {}
    with distributed.main_process_first("writing a.txt"):
        seen["first_entered_with_file"] = (out / "a.txt").exists()
        seen["first_content"] = write_once(out / "a.txt", log, rank)
    seen["run_on_main"] = distributed.run_on_main(
        lambda: {"rank": rank, "content": write_once(out / "b.txt", log, rank)}
    )

    def fail_on(failing_rank: int):
        def stage():
            with distributed.main_process_first("a failing stage"):
                if rank == failing_rank:
                    failing(f"bad data on rank {rank}")

        return stage

    seen["first_fails_on_0"] = _error(fail_on(0))
    seen["first_fails_on_1"] = _error(fail_on(1))
    seen["run_on_main_fails"] = _error(
        lambda: distributed.run_on_main(failing, "bad data on rank 0")
    )
    seen["continue"] = distributed.continue_on_main_only()
    seen["world_after"] = distributed.init_from_env("cpu").world_size
    seen["initialized_after"] = torch.distributed.is_initialized()
    return seen


def labels(out: Path, rank: int, overrides: list[str]) -> dict:
    from speechssl import targets
    from speechssl.cluster import KMeans
    from speechssl.config import compose
    from speechssl.train.hubert import iteration1_targets
    from speechssl.typed import to_dataclass

    log = out / "calls.log"
    fit, write_labels = KMeans.fit, targets._write_labels

    def logged_fit(self, *args, **kwargs):
        _log(log, f"{rank} fit")
        return fit(self, *args, **kwargs)

    def logged_write_labels(split, *args, **kwargs):
        _log(log, f"{rank} label {split.path.name}")
        return write_labels(split, *args, **kwargs)

    KMeans.fit, targets._write_labels = logged_fit, logged_write_labels
    spec = importlib.util.spec_from_file_location(
        "hubert_sat_run", REPO / "recipes" / "hubert_sat" / "run.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cfg = compose("hubert_sat", overrides)
    _, labelled = iteration1_targets(
        recipe.pretraining_data(cfg),
        Path(cfg.run_dir),
        to_dataclass(cfg.labels, targets.TargetConfig),
        seed=cfg.seed,
    )
    return {
        "fingerprint": labelled.kmeans.fingerprint,
        "train_frames": [int(sequence.size) for sequence in labelled.train.labels],
        "valid_labels_sum": int(sum(int(sequence.sum()) for sequence in labelled.valid.labels)),
    }


if __name__ == "__main__":
    out_dir, *overrides = sys.argv[1:]
    out_dir = Path(out_dir)
    rank = distributed.init_from_env("cpu").rank
    seen = {"labels": labels(out_dir, rank, overrides), "helpers": helpers(out_dir, rank)}
    (out_dir / f"rank{rank}.json").write_text(json.dumps(seen))
