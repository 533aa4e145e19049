"""Issue 24: resume under a changed config, a diverging run, a metrics.jsonl cut mid-line.

Each runs the shared Trainer behind the entry points' error boundary
(:func:`speechssl.errors.exit_on_bad_input`, what ``run_recipe`` and the CLI use): a refusal
is exit code 1 and one stderr line, and nothing the earlier run wrote is lost.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from conftest import assert_one_line_error, snapshot

from speechssl.errors import exit_on_bad_input
from speechssl.train import OptimConfig, Trainer, TrainerConfig
from speechssl.train.checkpoint import list_checkpoints, load_checkpoint
from speechssl.train.progress import read_metrics

_GENERATOR = torch.Generator().manual_seed(0)
_BATCHES = [(torch.randn(8, 3, generator=_GENERATOR), torch.randn(8, generator=_GENERATOR))] * 3


class _Regression(torch.nn.Module):
    """``forward`` returns a NaN loss from call ``diverge_after + 1`` on (0: never)."""

    def __init__(self, diverge_after: int = 0):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)
        self.diverge_after = diverge_after
        self.calls = 0

    def forward(self, batch):
        x, y = batch
        self.calls += 1
        loss = torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)
        if self.diverge_after and self.calls > self.diverge_after:
            loss = loss * float("nan")
        return loss, {}


def _trainer(run_dir, max_steps=4, lr=1e-2, model=None, **trainer) -> Trainer:
    torch.manual_seed(0)
    trainer_cfg = TrainerConfig(
        max_steps=max_steps,
        checkpoint_every=1,
        log_every=1,
        tensorboard=False,
        device="cpu",
        **trainer,
    )
    optim_cfg = OptimConfig(lr=lr)
    return Trainer(
        model or _Regression(),
        _BATCHES,
        trainer_cfg=trainer_cfg,
        optim_cfg=optim_cfg,
        full_config={"trainer": trainer_cfg, "optim": optim_cfg, "encoder": {"dim": 3}},
        run_dir=run_dir,
        show_progress=False,
    )


def _at_the_door(capsys, trainer: Trainer) -> tuple[int, dict | None, str]:
    """``(exit code, result, stderr)`` of ``trainer.fit()`` behind the error boundary."""
    capsys.readouterr()
    # a logging config run in-process by an earlier test (Hydra's dictConfig) may have left
    # handlers on a captured stream that is closed now: their "--- Logging error ---" is
    # pytest's doing, not the run's
    saved = {}
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        handlers = getattr(logger, "handlers", None)
        if handlers:
            saved[logger] = handlers[:]
            logger.handlers = [
                h for h in handlers if not getattr(getattr(h, "stream", None), "closed", False)
            ]
    try:
        result, code = exit_on_bad_input("speechssl", trainer.fit), 0
    except SystemExit as stop:
        result, code = None, int(stop.code or 0)
    finally:
        for logger, handlers in saved.items():
            logger.handlers = handlers
    return code, result, capsys.readouterr().err


@pytest.fixture(scope="module")
def step4_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("step4")
    _trainer(run_dir).fit()
    return run_dir


def test_a_smaller_max_steps_than_the_checkpoint_is_refused_not_reported(
    tmp_path, step4_run, capsys
):
    """Today a copy of a step-4 run resumed with max_steps=2 reports the step-4 model."""
    run_dir = tmp_path / "copy"
    shutil.copytree(step4_run, run_dir)
    before = snapshot(run_dir)
    code, _, err = _at_the_door(capsys, _trainer(run_dir, max_steps=2, resume="auto"))
    line = assert_one_line_error(code, err, "trainer.max_steps=2 is below this checkpoint's step 4")
    assert "trainer.resume=none" in line
    assert snapshot(run_dir) == before


def test_a_changed_config_value_is_refused_naming_the_key(tmp_path, step4_run, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(step4_run, run_dir)
    before = snapshot(run_dir)
    code, _, err = _at_the_door(capsys, _trainer(run_dir, lr=5e-2, resume="auto"))
    assert_one_line_error(
        code, err, "the config changed since this checkpoint: optim.lr (0.01 -> 0.05)"
    )
    assert snapshot(run_dir) == before


def test_a_larger_max_steps_is_adopted_and_trains_on(tmp_path, step4_run, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(step4_run, run_dir)
    code, result, _ = _at_the_door(capsys, _trainer(run_dir, max_steps=6, resume="auto"))
    assert code == 0 and result["step"] == 6
    assert [row["step"] for row in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_diverging_run_is_one_line_with_the_step_and_keeps_the_good_weights(
    tmp_path, capsys, precision
):
    """Steps 3 and 4 have a NaN loss: the run stops at step 4 (two in a row) with one line
    naming the checkpoint of the last good weights."""
    trainer = _trainer(
        tmp_path,
        max_steps=10,
        model=_Regression(diverge_after=2),
        keep_last=1,
        max_consecutive_nonfinite=2,
        precision=precision,
    )
    code, _, err = _at_the_door(capsys, trainer)
    line = assert_one_line_error(
        code, err, "training diverged at step 4 (2 non-finite losses in a row)"
    )
    assert "lower optim.lr" in line
    assert ("trainer.precision=fp32" in line) == (precision != "fp32")
    # steps 3 and 4 skipped their updates: both checkpoints hold the step-2 weights (a twin
    # run that keeps every checkpoint shows them); keep_last=1 pruned step 2, the
    # divergence pruned nothing
    names = [path.name for path in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000003.pt", "step_00000004.pt"]
    twin = _trainer(
        tmp_path / "twin",
        max_steps=10,
        model=_Regression(diverge_after=2),
        keep_last=0,
        max_consecutive_nonfinite=2,
        precision=precision,
    )
    assert _at_the_door(capsys, twin)[0] == 1
    good = load_checkpoint(tmp_path / "twin" / "checkpoints" / "step_00000002.pt")["model"]
    assert all(torch.isfinite(value).all() for value in good.values())
    for name in names:
        kept = load_checkpoint(tmp_path / "checkpoints" / name)["model"]
        assert all(torch.equal(good[key], kept[key]) for key in good), name
    assert str(tmp_path / "checkpoints" / "step_00000004.pt") in line


def test_a_metrics_line_cut_mid_write_is_repaired_on_resume(tmp_path, step4_run, capsys, caplog):
    """Today ``resume=auto`` stops on a JSONDecodeError that names no file."""
    run_dir = tmp_path / "copy"
    shutil.copytree(step4_run, run_dir)
    metrics = run_dir / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) - 12])  # the kill cut the step-4 row
    with caplog.at_level("INFO", logger="speechssl.train"):
        code, result, _ = _at_the_door(capsys, _trainer(run_dir, max_steps=6, resume="auto"))
    assert code == 0 and result["step"] == 6
    said = [record.message for record in caplog.records if "cut mid-write" in record.message]
    assert len(said) == 1 and str(metrics) in said[0]
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 5, 6]


def test_a_damaged_metrics_line_before_the_last_names_the_file_and_line(tmp_path, step4_run):
    run_dir = tmp_path / "copy"
    shutil.copytree(step4_run, run_dir)
    metrics = run_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][:5]
    metrics.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2 is not JSON"):
        read_metrics(metrics)
