"""Atomic, safely loadable training checkpoints.

A checkpoint is a ``torch.save`` dict with keys ``model``, ``optimizer``, ``scheduler``,
``scaler``, ``sampler``, ``rng``, ``step``, ``epoch``, ``config``, ``trainer`` and optionally
``encoder_spec``. It is written to a temporary file in the same folder, fsynced and
renamed over the final name, so a process killed at any moment leaves either the old
or the new file, never a half-written one under a final name. It is read with
``torch.load(weights_only=True)`` (:func:`speechssl.safe_io.load_torch_file`): only
tensors and plain containers/numbers/strings come back, so a file carrying a pickled object
that would run code is refused; resuming skips such a file like any other unusable one.

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

from speechssl.safe_io import (
    UnreadableFileError,
    UnsafeFileError,
    load_torch_file,
    save_torch_atomic,
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
# Leaf types a checkpoint may hold; anything else would need unpickling of arbitrary classes.
_SAFE_LEAVES = (
    str,
    int,
    float,
    bool,
    type(None),
    torch.Tensor,
    torch.Size,
    torch.dtype,
    torch.device,
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (truncated, not a checkpoint, missing keys)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holding objects outside the safe types: refused, never unpickled.

    Resuming skips it like any other unusable checkpoint (with a warning); loading it by
    name raises this."""


def checkpoint_path(folder: str | os.PathLike, step: int) -> Path:
    """``folder/step_XXXXXXXX.pt`` for a step."""
    return Path(folder) / f"step_{step:08d}.pt"


def _check_safe(value, where: str = "checkpoint") -> None:
    """Refuse, at save time, anything that ``torch.load(weights_only=True)`` could not read."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(
                    f"{where}: key {key!r} of type {type(key).__name__} is not saveable"
                )
            _check_safe(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_safe(item, f"{where}[{index}]")
    elif not isinstance(value, _SAFE_LEAVES):
        raise TypeError(
            f"{where} is a {type(value).__name__}; checkpoints hold only tensors, numbers, "
            "strings and lists/dicts of them (convert it, e.g. enum -> str, ndarray -> tensor)"
        )


def save_checkpoint(
    state: dict, folder: str | os.PathLike, step: int, name: str | None = None
) -> Path:
    """Write ``state`` atomically as ``folder/step_XXXXXXXX.pt`` (or ``folder/name``).

    Temp file + flush + fsync + rename + fsync of the folder: after a crash the final
    name holds either the previous complete file or the new complete file.
    """
    _check_safe(state)
    folder = Path(folder)
    path = folder / name if name else checkpoint_path(folder, step)
    return save_torch_atomic(state, path, durable=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        UnsafeCheckpointError: the file holds a pickled object outside the safe types
            (it is not executed).
        CheckpointError: missing, truncated or otherwise unreadable file, or not a
            speechssl checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = load_torch_file(path, "checkpoint", map_location=map_location)
    except UnsafeFileError as error:
        raise UnsafeCheckpointError(str(error)) from None
    except UnreadableFileError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        found = type(state).__name__ if not isinstance(state, dict) else "a dict without them"
        raise CheckpointError(
            f"{path}: not a speechssl checkpoint (no 'model'/'step' keys: {found})"
        )
    return state


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
