"""torch.distributed set-up from torchrun's environment, and small collective helpers.

Start a job with ``torchrun --nproc_per_node=N train.py`` (add ``--nnodes``,
``--node_rank``, ``--rdzv_endpoint`` for several machines); there is no launcher of our
own. ``init_from_env()`` reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and starts the
process group (NCCL on GPUs, gloo on CPU). Without torchrun every helper works as the
single process of a world of size 1.

Example:
    >>> info = init_from_env()  # a plain `python` run: world of size 1, nothing started
    >>> info.world_size, is_main()
    (1, True)
    >>> all_reduce_mean({"loss": 2.0})
    {'loss': 2.0}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "DistributedInfo",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "gather_objects",
    "get_info",
    "init_from_env",
    "is_main",
]


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process sits: global ``rank``, ``local_rank`` on its node, ``world_size``."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_info() -> DistributedInfo:
    """The current process's place (from the process group, else the environment)."""
    if _active():
        return DistributedInfo(
            rank=dist.get_rank(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            world_size=dist.get_world_size(),
        )
    return DistributedInfo()


def init_from_env(device: str = "auto", timeout_minutes: float = 30.0) -> DistributedInfo:
    """Start the process group when run under torchrun (``WORLD_SIZE`` > 1); idempotent.

    Args:
        device: ``auto`` (CUDA if available), ``cuda`` or ``cpu``; picks NCCL for CUDA and
            gloo for CPU, and on CUDA selects the GPU ``LOCAL_RANK``.
    """
    if _active():
        return get_info()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedInfo()
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(
                f"WORLD_SIZE={world_size} but {name} is not set: start the job with torchrun"
            )
    local_rank = int(os.environ["LOCAL_RANK"])
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        timeout=timedelta(minutes=timeout_minutes),
        # binding NCCL to the device avoids a guess (and a warning) on the first collective
        device_id=torch.device("cuda", local_rank) if use_cuda else None,
    )
    return get_info()


def is_main() -> bool:
    """True on global rank 0 (the only rank that writes files)."""
    return get_info().rank == 0


def barrier() -> None:
    """Wait for all ranks (no-op in a single process)."""
    if _active():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if _active():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors
    if _active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(values: dict[str, float | torch.Tensor], average: bool) -> dict[str, float]:
    keys = sorted(values)  # the same order on every rank
    if not _active() or dist.get_world_size() == 1:
        return {key: float(values[key]) for key in keys}
    device = _collective_device()
    stacked = (
        torch.stack(
            [
                torch.as_tensor(values[key], dtype=torch.float64).detach().to(device).reshape(())
                for key in keys
            ]
        )
        if keys
        else torch.zeros(0, dtype=torch.float64, device=device)
    )
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    if average:
        stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.tolist()))


def all_reduce_mean(values: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """Mean of each named scalar over all ranks (one collective); every rank must pass the same keys."""
    return _all_reduce(values, average=True)


def all_reduce_sum(values: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """Sum of each named scalar over all ranks (one collective)."""
    return _all_reduce(values, average=False)


def gather_objects(value) -> list:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (pickled between our own ranks)."""
    if not _active() or dist.get_world_size() == 1:
        return [value]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
