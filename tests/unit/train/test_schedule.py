"""Learning-rate schedules against torch's own schedulers, and parameter groups."""

import math

import pytest
import torch

from speechssl.train.config import OptimConfig, ParamGroupConfig
from speechssl.train.schedule import LrMultiplier, build_optimizer, build_scheduler


def _torch_lrs(scheduler_class, steps, **kwargs):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = scheduler_class(optimizer, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_after_warmup_matches_torch_cosine_annealing():
    optim = OptimConfig(schedule="cosine", warmup_steps=10, final_lr_scale=0.1)
    multiplier = LrMultiplier(optim, total_steps=110)
    reference = _torch_lrs(torch.optim.lr_scheduler.CosineAnnealingLR, 100, T_max=100, eta_min=0.1)
    ours = [multiplier(step) for step in range(10, 110)]
    assert ours == pytest.approx(reference, abs=1e-12)
    assert [multiplier(step) for step in range(10)] == pytest.approx(
        [(s + 1) / 10 for s in range(10)]
    )


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_polynomial_matches_torch_polynomial_lr(power):
    optim = OptimConfig(schedule="polynomial", power=power)
    multiplier = LrMultiplier(optim, total_steps=50)
    reference = _torch_lrs(torch.optim.lr_scheduler.PolynomialLR, 50, total_iters=50, power=power)
    assert [multiplier(step) for step in range(50)] == pytest.approx(reference, abs=1e-12)


def test_tri_stage_follows_fairseq_phases():
    optim = OptimConfig(
        schedule="tri_stage", phase_ratio=[0.1, 0.4, 0.5], init_lr_scale=0.01, final_lr_scale=0.05
    )
    multiplier = LrMultiplier(optim, total_steps=1000)
    assert multiplier(0) == pytest.approx(0.01)
    assert multiplier(50) == pytest.approx(0.01 + 0.99 * 0.5)  # linear warmup
    assert multiplier(100) == multiplier(499) == 1.0  # hold
    # exponential decay: halfway through the decay is sqrt(final_lr_scale)
    assert multiplier(500 + 250) == pytest.approx(math.sqrt(0.05))
    assert multiplier(1000) == pytest.approx(0.05) and multiplier(5000) == 0.05


def test_bad_schedule_settings_fail_clearly():
    with pytest.raises(ValueError, match="phase_ratio"):
        LrMultiplier(OptimConfig(schedule="tri_stage", phase_ratio=[0.5, 0.5]), 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        LrMultiplier(OptimConfig(warmup_steps=20), 10)


class _FineTuneModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.ModuleDict(
            {"conv": torch.nn.Conv1d(1, 4, 3), "layer": torch.nn.Linear(4, 4)}
        )
        self.head = torch.nn.Linear(4, 2)


def test_param_groups_scale_lr_freeze_and_skip_decay_for_biases():
    model = _FineTuneModel()
    optim = OptimConfig(
        lr=1e-3,
        weight_decay=0.1,
        param_groups=[
            ParamGroupConfig(prefix="encoder.", lr_scale=0.1),
            ParamGroupConfig(prefix="encoder.conv.", frozen=True),
        ],
    )
    optimizer = build_optimizer(model, optim)
    assert not model.encoder.conv.weight.requires_grad and model.head.weight.requires_grad
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["encoder."]["lr"] == pytest.approx(1e-4)
    assert by_name["encoder."]["params"] == [model.encoder.layer.weight]
    assert by_name["encoder./no_decay"]["weight_decay"] == 0.0
    assert by_name["default"]["lr"] == 1e-3 and by_name["default"]["weight_decay"] == 0.1
    scheduler = build_scheduler(
        optimizer, OptimConfig(lr=1e-3, warmup_steps=2, schedule="constant"), 10
    )
    optimizer.step()
    scheduler.step()
    # the schedule multiplies each group's own lr
    assert by_name["encoder."]["lr"] == pytest.approx(1e-4) and by_name["default"][
        "lr"
    ] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="matches no parameter"):
        build_optimizer(model, OptimConfig(param_groups=[ParamGroupConfig(prefix="encoderr.")]))
