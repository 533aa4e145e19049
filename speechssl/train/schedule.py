"""AdamW with per-prefix parameter groups and warmup + decay learning-rate schedules.

The schedules are written as one multiplier function of the step (wrapped in
``torch.optim.lr_scheduler.LambdaLR``) because torch has no tri-stage schedule and
chaining its warmup/decay schedulers makes the resumed state harder to reason about.

Example:
    >>> import torch
    >>> from speechssl.train.config import OptimConfig
    >>> model = torch.nn.Linear(4, 2)
    >>> optim = OptimConfig(lr=1e-3, warmup_steps=10, schedule="linear")
    >>> optimizer = build_optimizer(model, optim)
    >>> scheduler = build_scheduler(optimizer, optim, total_steps=100)
    >>> [round(LrMultiplier(optim, 100)(step), 2) for step in (0, 4, 9, 55, 100)]
    [0.1, 0.5, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math

import torch

from speechssl.train.config import OptimConfig, Schedule

__all__ = ["LrMultiplier", "build_optimizer", "build_scheduler", "parameter_groups"]


def parameter_groups(model: torch.nn.Module, optim: OptimConfig) -> list[dict]:
    """Split the model's parameters into AdamW groups by name prefix.

    Each group dict holds ``params``, ``lr``, ``weight_decay``, ``lr_scale`` and ``name``.
    Parameters of a ``frozen`` prefix get ``requires_grad=False`` and join no group.
    1-D parameters (biases, norm weights) get no weight decay unless
    ``optim.decay_bias_and_norm``.

    Raises:
        ValueError: a configured prefix matches no parameter (usually a typo).
    """
    prefixes = sorted(optim.param_groups, key=lambda group: len(group.prefix), reverse=True)
    matched = {group.prefix: 0 for group in optim.param_groups}
    groups: dict[tuple[str, bool], dict] = {}
    for name, parameter in model.named_parameters():
        setting = next((group for group in prefixes if name.startswith(group.prefix)), None)
        if setting is not None:
            matched[setting.prefix] += 1
            if setting.frozen:
                parameter.requires_grad_(False)
                continue
        if not parameter.requires_grad:
            continue
        prefix = setting.prefix if setting is not None else ""
        lr_scale = setting.lr_scale if setting is not None else 1.0
        weight_decay = optim.weight_decay
        if setting is not None and setting.weight_decay is not None:
            weight_decay = setting.weight_decay
        decays = parameter.ndim >= 2 or optim.decay_bias_and_norm
        key = (prefix, decays)
        if key not in groups:
            groups[key] = {
                "params": [],
                "name": f"{prefix or 'default'}{'' if decays else '/no_decay'}",
                "lr_scale": lr_scale,
                "lr": optim.lr * lr_scale,
                "weight_decay": weight_decay if decays else 0.0,
            }
        groups[key]["params"].append(parameter)
    unmatched = [prefix for prefix, count in matched.items() if count == 0]
    if unmatched:
        raise ValueError(f"optim.param_groups prefix matches no parameter: {unmatched}")
    if not groups:
        raise ValueError("the model has no trainable parameter")
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups(model, optim)``; fused on CUDA unless ``optim.fused`` says."""
    groups = parameter_groups(model, optim)
    on_cuda = all(p.is_cuda for group in groups for p in group["params"])
    fused = on_cuda if optim.fused is None else optim.fused
    return torch.optim.AdamW(
        groups,
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=fused or None,  # None lets torch pick foreach where fused is off
    )


class LrMultiplier:
    """The schedule as a function ``step -> multiplier of the peak lr``.

    ``step`` counts the updates done before the one the multiplier is for (0 for the
    first update), so warmup runs ``1/W, 2/W, ..., 1`` and the decay reaches
    ``final_lr_scale`` at ``total_steps``.

    A class (not a closure) so that ``LambdaLR.state_dict()`` stores its plain fields,
    which keeps checkpoints loadable with ``weights_only=True``.
    """

    def __init__(self, optim: OptimConfig, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"the schedule needs total_steps >= 1, got {total_steps}")
        self.schedule = Schedule(optim.schedule).value
        self.total_steps = int(total_steps)
        self.warmup_steps = int(optim.warmup_steps)
        self.final_lr_scale = float(optim.final_lr_scale)
        self.power = float(optim.power)
        self.init_lr_scale = float(optim.init_lr_scale)
        self.hold_steps = 0
        self.decay_steps = 0
        if self.schedule == Schedule.tri_stage.value:
            ratios = list(optim.phase_ratio or [])
            if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
                raise ValueError(
                    f"tri_stage needs optim.phase_ratio = 3 non-negative numbers summing to 1, "
                    f"got {optim.phase_ratio}"
                )
            if not 0 < self.final_lr_scale <= 1:
                raise ValueError(
                    "tri_stage needs 0 < optim.final_lr_scale <= 1 (exponential decay)"
                )
            # fairseq tri_stage: the phases are fractions of max_update
            self.warmup_steps = int(total_steps * ratios[0])
            self.hold_steps = int(total_steps * ratios[1])
            self.decay_steps = int(total_steps * ratios[2])
        if self.warmup_steps < 0 or self.warmup_steps > total_steps:
            raise ValueError(f"optim.warmup_steps must be in [0, {total_steps}]")

    def __call__(self, step: int) -> float:
        if self.schedule == Schedule.tri_stage.value:
            return self._tri_stage(step)
        if step < self.warmup_steps:
            # the first update already moves (fairseq: lr * num_updates / warmup_updates)
            return (step + 1) / self.warmup_steps
        if self.schedule == Schedule.constant.value:
            return 1.0
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        floor = self.final_lr_scale
        if self.schedule == Schedule.cosine.value:
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        power = 1.0 if self.schedule == Schedule.linear.value else self.power
        return floor + (1.0 - floor) * (1.0 - progress) ** power

    def _tri_stage(self, step: int) -> float:
        if step < self.warmup_steps:
            # linear from init_lr_scale to 1
            return self.init_lr_scale + (1.0 - self.init_lr_scale) * step / self.warmup_steps
        step -= self.warmup_steps
        if step < self.hold_steps:
            return 1.0
        step -= self.hold_steps
        if step <= self.decay_steps:
            # exponential decay reaching final_lr_scale at the end of the decay phase
            decay_factor = -math.log(self.final_lr_scale) / max(1, self.decay_steps)
            return math.exp(-decay_factor * step)
        return self.final_lr_scale


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` stepping ``LrMultiplier`` once per optimiser step (per-group lr_scale kept)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LrMultiplier(optim, total_steps))
