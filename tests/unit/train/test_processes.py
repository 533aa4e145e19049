"""Whole training processes: SIGKILL + resume=auto, and 2-process torchrun (gloo) parity.

Each test runs ``train_script.py`` in subprocesses and its reference run inside the test
process meanwhile (on one thread, like the subprocesses). Tolerances: the killed-and-resumed run must equal the uninterrupted one bit for
bit (same seed, restored RNG, one thread); the 2-rank DDP run must match one process
accumulating the same two micro-batches to 1e-5 in every parameter after 6 AdamW steps
(only the order of the float additions in the gradient average differs).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from train_script import run_single_threaded

from speechssl.train.checkpoint import list_checkpoints, load_checkpoint
from speechssl.train.progress import read_metrics

SCRIPT = Path(__file__).resolve().parent / "train_script.py"
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _start(*arguments, torchrun_processes=0):
    launcher = [sys.executable]
    if torchrun_processes:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={torchrun_processes}",
        ]
    return subprocess.Popen(
        [*launcher, str(SCRIPT), *map(str, arguments)],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process, timeout=120):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _losses(run_dir):
    return {
        row["step"]: row["loss"]
        for row in read_metrics(run_dir / "metrics.jsonl")
        if row["split"] == "train"
    }


def test_sigkill_then_resume_auto_reproduces_the_uninterrupted_losses(corpus, tmp_path):
    settings = ["--dropout", "0.2", "max_steps=10", "checkpoint_every=1", "keep_last=2"]
    victim = _start(corpus[1], tmp_path / "killed", "--sleep", "0.3", *settings)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 90
    while not (checkpoints / "step_00000004.pt").exists():
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the job wrote no 4th checkpoint"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    survivors = list_checkpoints(checkpoints)
    assert (
        4 <= int(survivors[-1].stem[5:]) < 10 and len(survivors) <= 3
    )  # killed mid-run, pruning on
    assert not (tmp_path / "killed" / "final_params.pt").exists()

    resumed = _start(corpus[1], tmp_path / "killed", *settings)
    run_single_threaded(corpus[1], tmp_path / "reference", settings[2:], dropout=0.2)
    _finish(resumed)
    expected = _losses(tmp_path / "reference")
    assert sorted(expected) == list(range(1, 11))
    assert _losses(tmp_path / "killed") == expected  # every step, exactly
    final = torch.load(tmp_path / "killed" / "final_params.pt", weights_only=True)
    for name, value in torch.load(
        tmp_path / "reference" / "final_params.pt", weights_only=True
    ).items():
        assert torch.equal(final[name], value), name


def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(corpus, tmp_path):
    settings = [
        "max_steps=6",
        "checkpoint_every=6",
    ]  # 6 steps cross an epoch boundary (4 per epoch)
    ddp = _start(corpus[1], tmp_path / "ddp", *settings, torchrun_processes=2)
    run_single_threaded(corpus[1], tmp_path / "single", ["grad_accum=2", *settings], interleave=2)
    _finish(ddp)
    ddp_params = torch.load(tmp_path / "ddp" / "final_params.pt", weights_only=True)
    single_params = torch.load(tmp_path / "single" / "final_params.pt", weights_only=True)
    for name, value in single_params.items():
        torch.testing.assert_close(ddp_params[name], value, atol=1e-5, rtol=0, msg=name)
    # the logged loss is the mean over ranks, i.e. the global batch's loss
    ddp_losses, single_losses = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert sorted(ddp_losses) == list(range(1, 7))
    assert all(abs(ddp_losses[s] - single_losses[s]) < 1e-5 for s in ddp_losses)
    state = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "step_00000006.pt")
    assert len(state["rng"]) == 2 and state["trainer"]["world_size"] == 2  # both ranks' RNG saved
    assert state["sampler"]["num_replicas"] == 2 and state["epoch"] == 1
