"""torch.distributed set-up from torchrun's environment, and small collective helpers.

Start a job with ``torchrun --nproc_per_node=N train.py`` (add ``--nnodes``,
``--node_rank``, ``--rdzv_endpoint`` for several machines); there is no launcher of our
own. ``init_from_env()`` reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and starts the
process group (NCCL on GPUs, gloo on CPU). Without torchrun every helper works as the
single process of a world of size 1.

A recipe that runs under torchrun calls ``init_from_env()`` once at its start, then:

* ``with main_process_first(): ...`` around data preparation, k-means fitting and
  labelling: rank 0 runs the block and writes its files, the other ranks wait, then run
  the same block and find the files there (load instead of compute);
* ``run_on_main(fn, ...)`` for a stage only rank 0 runs (its picklable result reaches
  every rank);
* pre-training on every rank (the Trainer wraps the model in DDP);
* ``continue_on_main_only()`` before evaluation and reporting: the process group ends,
  the other ranks stop, rank 0 goes on as a single process (its Trainers, loaders and
  samplers then see a world of size 1).

A failure on rank 0 inside ``main_process_first``/``run_on_main`` raises on every rank
(instead of leaving the others waiting). The others wait for rank 0 on a CPU (gloo)
group with a long timeout of its own (``wait_timeout_minutes``), since rank 0 alone may
take hours to label a corpus while training collectives keep the short timeout.

Example:
    >>> info = init_from_env()  # a plain `python` run: world of size 1, nothing started
    >>> info.world_size, is_main()
    (1, True)
    >>> all_reduce_mean({"loss": 2.0})
    {'loss': 2.0}
    >>> with main_process_first():  # a single process just runs the block
    ...     prepared = "manifests"
    >>> run_on_main(len, "abc"), continue_on_main_only()
    (3, True)
"""

from __future__ import annotations

import contextlib
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
    "continue_on_main_only",
    "gather_objects",
    "get_info",
    "init_from_env",
    "is_main",
    "main_process_first",
    "run_on_main",
]

# CPU group on which the other ranks wait for rank 0 (created by init_from_env)
_wait_group: dist.ProcessGroup | None = None
# set by continue_on_main_only(): this process stays a world of size 1 from then on
_main_only = False


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


def init_from_env(
    device: str = "auto", timeout_minutes: float = 30.0, wait_timeout_minutes: float = 24 * 60.0
) -> DistributedInfo:
    """Start the process group when run under torchrun (``WORLD_SIZE`` > 1); idempotent.

    After :func:`continue_on_main_only` it starts nothing and reports a world of size 1.

    Args:
        device: ``auto`` (CUDA if available), ``cuda`` or ``cpu``; picks NCCL for CUDA and
            gloo for CPU, and on CUDA selects the GPU ``LOCAL_RANK``.
        timeout_minutes: timeout of the training collectives.
        wait_timeout_minutes: how long the other ranks wait for a stage of rank 0 alone
            (:func:`main_process_first`, :func:`run_on_main`).
    """
    global _wait_group
    if _main_only:
        return DistributedInfo()
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
    # a gloo group of its own: pickled objects travel on the CPU whatever the training
    # backend, and its long timeout covers rank 0's solo stages
    _wait_group = dist.new_group(backend="gloo", timeout=timedelta(minutes=wait_timeout_minutes))
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
    global _wait_group
    if _active():
        dist.destroy_process_group()
    _wait_group = None


def _several_processes() -> bool:
    return _active() and dist.get_world_size() > 1


def _from_main(value):
    """Rank 0's ``value`` on every rank (pickled on the wait group)."""
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_wait_group)
    return box[0]


def _statuses(failure: str | None) -> list[str | None]:
    """Every rank's failure message (None: fine), gathered on every rank."""
    statuses: list = [None] * dist.get_world_size()
    dist.all_gather_object(statuses, failure, group=_wait_group)
    return statuses


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


@contextlib.contextmanager
def main_process_first(stage: str = "a main-process-first stage"):
    """Rank 0 runs the block, then the other ranks run it, then all leave it together.

    Wrap stages that write files only when they are missing or stale (data preparation,
    k-means, frame labels): rank 0 computes and writes them, the others find them and
    only load, so no two processes ever write the same file. A failure on rank 0 raises
    ``RuntimeError`` on the others instead of running the block there; a failure on any
    rank raises on every rank at the end. In a single process it just runs the block.

    Example:
        >>> with main_process_first("labels"):
        ...     labels = "computed by rank 0, loaded by the others"
    """
    if not _several_processes():
        yield
        return
    main = is_main()
    if not main:
        failed_on_main = _from_main(None)  # wait for rank 0's turn
        if failed_on_main is not None:
            raise RuntimeError(f"rank 0 failed in {stage}: {failed_on_main}")
    try:
        yield
    except Exception as error:
        if main:
            _from_main(_describe(error))  # release the waiting ranks with the reason
        else:
            _statuses(_describe(error))  # the final check of the others
        raise
    if main:
        _from_main(None)
    failures = [(rank, message) for rank, message in enumerate(_statuses(None)) if message]
    if failures:
        rank, message = failures[0]
        raise RuntimeError(f"rank {rank} failed in {stage}: {message}")


def run_on_main(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on rank 0 only; its result is returned on every rank.

    The other ranks wait (see ``wait_timeout_minutes`` of :func:`init_from_env`) and get
    rank 0's result, which must be picklable; a failure on rank 0 raises ``RuntimeError``
    on them. ``function`` must not use collectives or DDP-sharded loaders (the other ranks
    are not there): for evaluation after training, use :func:`continue_on_main_only`.

    Example:
        >>> run_on_main(sorted, {"b", "a"})  # a single process just calls it
        ['a', 'b']
    """
    name = getattr(function, "__name__", repr(function))
    if not _several_processes():
        return function(*args, **kwargs)
    if not is_main():
        succeeded, payload = _from_main(None)
        if not succeeded:
            raise RuntimeError(f"rank 0 failed in {name}: {payload}")
        return payload
    try:
        result = function(*args, **kwargs)
    except Exception as error:
        _from_main((False, _describe(error)))
        raise
    try:
        return _from_main((True, result))[1]
    except Exception as error:  # pickling failed before anything was sent
        _from_main((False, f"its result could not be sent: {_describe(error)}"))
        raise


def continue_on_main_only() -> bool:
    """End distributed work: True on rank 0, which goes on as a single process.

    Every rank waits for the others, the process group is destroyed, and from then on
    :func:`init_from_env` starts nothing, so rank 0's later Trainers, loaders and
    samplers (evaluation, reports) see a world of size 1. The other ranks get False and
    should return. In a single process it returns True and changes nothing.
    """
    global _main_only
    if not _active():
        return True
    rank = dist.get_rank()
    dist.barrier(group=_wait_group)
    cleanup()
    _main_only = True
    return rank == 0


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
