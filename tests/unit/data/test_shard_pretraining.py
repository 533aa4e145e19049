"""Pre-training on shards through the tpc recipe: 2-process torchrun (gloo), and a killed
run's resume continuing the same batches (the Trainer checkpoints the stream's state)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechssl.config import compose
from speechssl.data.loaders import load_manifests
from speechssl.data.prepare import prepare
from speechssl.data.shards import write_shards
from speechssl.demo import demo_path
from speechssl.train.checkpoint import load_checkpoint
from speechssl.train.progress import read_metrics

pytest.importorskip("webdataset")
SCRIPT = Path(__file__).resolve().parent / "shard_pretrain_script.py"
RECIPE = Path("recipes") / "tpc" / "run.py"
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain_shards")
    prepare("librispeech", demo_path("librispeech"), folder / "prepared", verify=False)
    manifest = load_manifests([folder / "prepared" / "train-clean-100.jsonl"])
    write_shards(manifest.subset(range(48)), folder / "shards", shard_seconds=60.0)
    return folder / "shards"


def _run(shard_dir, run_dir, *overrides, processes=1):
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, str(SCRIPT), str(shard_dir), str(run_dir), *overrides]
    done = subprocess.run(
        command, check=False, env=ENVIRONMENT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def _train_losses(run_dir):
    rows = read_metrics(run_dir / "pretrain" / "metrics.jsonl")
    return {row["step"]: row["loss"] for row in rows if row["split"] == "train"}


@pytest.mark.slow  # two torchrun processes importing the recipe: about a minute on 2 cores
def test_two_process_torchrun_pretrains_on_shards(shard_dir, tmp_path):
    _run(shard_dir, tmp_path, "data.num_workers=1", processes=2)
    losses = _train_losses(tmp_path)
    assert sorted(losses) == [1, 2, 3, 4]
    state = load_checkpoint(tmp_path / "pretrain" / "checkpoints" / "step_00000004.pt")
    assert state["sampler"]["num_replicas"] == 2 and state["sampler"]["num_workers"] == 1
    assert state["sampler"]["batches_consumed"] == 4 and state["trainer"]["world_size"] == 2


@pytest.mark.slow  # two tiny pre-training runs: about 25 s on 2 shared cores
def test_resumed_run_on_shards_continues_with_the_same_batches(shard_dir, tmp_path):
    """A run killed after its step-2 checkpoint resumes to step 4 with the losses of the
    uninterrupted run: the Trainer restored the stream's state, and the stream yielded
    the batches still to come (in process, through the recipe's own ``pretrain``)."""
    spec = importlib.util.spec_from_file_location("tpc_recipe", SCRIPT.parents[3] / RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)

    def pretrain(run_dir):
        sources = f"pretrain.sources=[{{corpus: shards, src: {shard_dir}}}]"
        cfg = compose("tpc", ["debug=tiny", f"run_dir={run_dir}", sources])
        return recipe.pretrain(cfg, run_dir)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(tmp_path / "whole")
        shutil.copytree(tmp_path / "whole", tmp_path / "cut")
        (tmp_path / "cut" / "pretrain" / "checkpoints" / "step_00000004.pt").unlink()
        pretrain(tmp_path / "cut")
    finally:
        torch.set_num_threads(threads)
    whole, cut = _train_losses(tmp_path / "whole"), _train_losses(tmp_path / "cut")
    assert sorted(cut) == [1, 2, 3, 4]
    assert cut == whole  # bit for bit, on one thread
    state = load_checkpoint(tmp_path / "cut" / "pretrain" / "checkpoints" / "step_00000004.pt")
    assert state["sampler"]["batches_consumed"] == 4 and state["sampler"]["seed"] == 0
