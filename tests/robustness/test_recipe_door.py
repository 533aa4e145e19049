"""Every recipe checks its option values and its run folder before any work: a bad value is
one line and exit code 1 (never a failure after minutes of pre-training), a run folder that
is a file, sits below a file or is held by another run is one line too, and whatever an
earlier run left in the folder is untouched."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import REPO, assert_one_line_error, snapshot

# (recipe, override, words the line must hold); values a careless or hostile user may type
BAD_VALUES = [
    # tpc's default head is the linear probe; SUPERB's mean-pool head has a projector
    ("tpc", "head=mean_pool head.projector_dim=-1", "head.projector_dim=-1: must be > 0"),
    ("tpc", "head=mean_pool head.projector_dim=0", "head.projector_dim=0: must be > 0"),
    ("tpc", "head.c_grid=[0.1,-1.0]", "head.c_grid[1]=-1.0: must be >= 0"),
    ("tpc", "objective.mask_prob=2.0", "objective.mask_prob=2.0: must lie in [0, 1]"),
    ("tpc", "encoder.num_layers=0", "encoder.num_layers=0"),
    ("tpc", "optim.lr=-0.1", "optim.lr=-0.1"),
    ("tpc", "data.max_batch_seconds=0", "data.max_batch_seconds=0"),
    ("tpc", "optim.weight_decay=nan", "must be a finite number"),
    ("hubert_sat", "objective.mask_prob=2.0", "objective.mask_prob=2.0"),
    ("hubert_sat", "encoder.dropout=1.5", "encoder.dropout=1.5"),
    ("hubert_sat", "trainer.max_steps=-3", "trainer.max_steps=-3: must be >= 0"),
    ("hubert_sat", "objective.mask_length=0", "objective.mask_length=0: must be > 0"),
    ("tts_pretrain", "tts.n_mels=-80", "tts.n_mels=-80"),
    ("tts_pretrain", "trainer.grad_accum=0", "trainer.grad_accum=0"),
    ("tts_pretrain", "optim.betas=[0.9,1.5]", "optim.betas[1]=1.5"),
    ("finetune", "head=mean_pool head.projector_dim=-1", "head.projector_dim=-1"),
    ("finetune", "data.valid_fraction=3", "data.valid_fraction=3"),
    ("finetune", "transfer.lr=0", "transfer.lr=0"),
    ("finetune", "trainer.device=cuda", "trainer.device=cuda: CUDA is not available"),
]


@pytest.mark.parametrize("name, override, expect", BAD_VALUES)
def test_bad_value_is_one_line_before_any_work(recipe, tmp_path, name, override, expect):
    if "cuda" in override and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    run_dir = tmp_path / "run"
    code, stderr = recipe(name, *override.split(), f"run_dir={run_dir}")
    line = assert_one_line_error(code, stderr, expect)
    assert line.startswith(f"{name}: error: ")
    assert not run_dir.exists()  # nothing prepared, trained or even created


@pytest.mark.parametrize("name", ["tpc", "hubert_sat", "tts_pretrain", "finetune"])
def test_run_dir_that_is_a_file_is_one_line(recipe, tmp_path, name):
    occupied = tmp_path / "results.json"
    occupied.write_text("{}")
    code, stderr = recipe(name, f"run_dir={occupied}")
    assert_one_line_error(code, stderr, "is a file")
    code, stderr = recipe(name, f"run_dir={occupied / 'below'}")
    assert_one_line_error(code, stderr, "Not a directory")
    assert occupied.read_text() == "{}"


@pytest.fixture
def held_run_dir(tmp_path):
    """A run folder with earlier outputs, locked by another living process."""
    run_dir = tmp_path / "run"
    (run_dir / "pretrain" / "checkpoints").mkdir(parents=True)
    (run_dir / "results.json").write_text('{"table": "of the first run"}\n')
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # what RunLock does, without importing torch (a fast start)
            (
                "import fcntl, os, time; "
                f"fd = os.open({str(run_dir / '.lock')!r}, os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode()); "
                "print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    yield run_dir, holder
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_second_run_on_a_held_run_dir_stops_naming_the_pid(recipe, held_run_dir):
    run_dir, holder = held_run_dir
    before = snapshot(run_dir)
    code, stderr = recipe("tpc", f"run_dir={run_dir}")
    assert_one_line_error(code, stderr, f"in use by another run (pid {holder.pid})")
    assert snapshot(run_dir) == before
    # the holder dies: its lock is stale and the next run takes it over
    holder.kill()
    holder.wait()
    from speechssl.safe_io import RunLock

    with RunLock(run_dir) as lock:
        assert lock.held
        assert (run_dir / ".lock").read_text().strip() == str(__import__("os").getpid())


def test_trainer_on_a_held_run_dir_stops_before_training(held_run_dir):
    from speechssl.safe_io import RunDirBusyError
    from speechssl.train import Trainer, TrainerConfig

    run_dir, holder = held_run_dir
    before = snapshot(run_dir)
    trainer = Trainer(
        _Regression(),
        [(_x(), _x()[:, 0])],
        trainer_cfg=TrainerConfig(max_steps=1, tensorboard=False, device="cpu"),
        run_dir=run_dir,
        show_progress=False,
    )
    started = time.perf_counter()
    with pytest.raises(RunDirBusyError, match=f"pid {holder.pid}"):
        trainer.fit()
    assert time.perf_counter() - started < 5
    assert snapshot(run_dir) == before


def _x():
    import torch

    return torch.ones(4, 3)


class _Regression(__import__("torch").nn.Module):
    def __init__(self):
        import torch

        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, batch):
        import torch

        x, y = batch
        return torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y), {}


def test_through_hydra_a_bad_value_leaves_the_earlier_runs_records_alone(tmp_path):
    """Hydra writes .hydra/ and the job log into run_dir before the recipe starts: the
    door (a Hydra callback) must refuse first, or a rerun with a typo would overwrite the
    first run's recorded config."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0  # the first run's\n")
    (run_dir / "run.log").write_text("the first run's log\n")
    before = snapshot(run_dir)
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "tpc" / "run.py"),
            "debug=tiny",
            f"run_dir={run_dir}",
            "head.projector_dim=-1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(completed.returncode, completed.stderr, "head.projector_dim=-1")
    assert snapshot(run_dir) == before


def test_an_experiment_preset_of_another_recipe_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "recipes" / "tpc" / "run.py"),
            "experiment=tts_pretrain_small",  # composes: tpc's pretrain section is untyped
            f"run_dir={run_dir}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(
        completed.returncode, completed.stderr, "experiment=tts_pretrain_small: a preset of another"
    )
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "name, override, expect",
    [
        ("tpc", "seed=x", "seed='x': must be an integer"),
        ("tpc", "emotion.max_folds=2.5", "emotion.max_folds=2.5: must be an integer"),
        ("hubert_sat", "pretrain.max_utterances=many", "must be an integer"),
    ],
)
def test_value_of_the_wrong_type_in_a_recipe_section_is_one_line(
    recipe, tmp_path, name, override, expect
):
    run_dir = tmp_path / "run"
    code, stderr = recipe(name, override, f"run_dir={run_dir}")
    assert_one_line_error(code, stderr, expect)
    assert not run_dir.exists()
