"""A run's checkpoint folder: step-numbered files, the newest usable one, pruning, and the
random streams an exact resume restores.

What one checkpoint holds, and how it is written and read (atomically, weights-only), is
:mod:`speechssl.checkpoint_format`'s: this module names the files and picks among them.
A file carrying a pickled object that would run code is refused there; resuming skips such
a file like any other unusable one.

Example:
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> path = save_checkpoint({"model": {"w": torch.ones(2)}, "step": 3}, folder, step=3)
    >>> load_checkpoint(path)["step"]
    3
    >>> latest_checkpoint(folder) == path
    True
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from speechssl.checkpoint_format import (
    Checkpoint,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    write_checkpoint,
)

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "capture_rng_state",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
]

_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    """``folder/step_XXXXXXXX.pt`` for a step."""
    return Path(folder) / f"step_{step:08d}.pt"


def save_checkpoint(
    state: Checkpoint | dict, folder: str | os.PathLike, step: int, name: str | None = None
) -> Path:
    """Write ``state`` atomically as ``folder/step_XXXXXXXX.pt`` (or ``folder/name``).

    Temp file + flush + fsync + rename + fsync of the folder: after a crash the final
    name holds either the previous complete file or the new complete file.
    """
    folder = Path(folder)
    return write_checkpoint(state, folder / name if name else checkpoint_path(folder, step))


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Step checkpoints in ``folder``, oldest first (by the step in the name)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        (int(match.group(1)), entry)
        for entry in folder.iterdir()
        if (match := _NAME.match(entry.name))
    ]
    return [entry for _, entry in sorted(found)]


def load_latest_checkpoint(
    folder: str | os.PathLike, map_location: str | torch.device = "cpu", accept=None
) -> tuple[Path, dict] | tuple[None, None]:
    """The newest usable checkpoint in ``folder`` as ``(path, state)``; ``(None, None)`` if none.

    Unusable files — truncated, text, random bytes, a pickle asking for code (refused, not
    run), or one that ``accept(state)`` rejects by raising ``ValueError`` (e.g. weights of
    another shape) — are skipped with a warning naming the file and why, and the next older
    one is tried.
    """
    for path in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint(path, map_location=map_location)
        except CheckpointError as error:  # the message names the file
            warnings.warn(f"skipping checkpoint: {error}", stacklevel=2)
            continue
        try:
            if accept is not None:
                accept(state)
        except ValueError as error:
            warnings.warn(f"skipping checkpoint: {path}: {error}", stacklevel=2)
            continue
        return path, state
    return None, None


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """Path of the newest checkpoint in ``folder`` that loads (see ``load_latest_checkpoint``)."""
    return load_latest_checkpoint(folder)[0]


def prune_checkpoints(folder: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` step checkpoints (0 keeps all); returns the deleted."""
    if keep_last <= 0:
        return []
    old = list_checkpoints(folder)[:-keep_last]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def capture_rng_state() -> dict:
    """Python, NumPy, torch and CUDA generator states as checkpoint-safe values."""
    version, internal, gauss = random.getstate()
    bit_generator, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        # ndarray -> tensor: weights_only loading does not accept numpy arrays
        "numpy": [
            bit_generator,
            torch.from_numpy(keys.astype(np.int64)),
            position,
            has_gauss,
            cached,
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of ``capture_rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    bit_generator, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (bit_generator, keys.numpy().astype(np.uint32), position, has_gauss, cached)
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
