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
from collections.abc import Callable, Mapping, Sequence
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
from speechssl.safe_io import check_state_fits
from speechssl.train import distributed
from speechssl.train.progress import LoopState

__all__ = [
    "DOWNSTREAM_SECTIONS",
    "SAFE_TO_CHANGE",
    "CheckpointError",
    "UnsafeCheckpointError",
    "capture_rng_state",
    "check_resumable",
    "check_resume_config",
    "checkpoint_path",
    "choose_resume_checkpoint",
    "config_changes",
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


# ------------------------------------------------------------------ resume policy
def check_resumable(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise ``ValueError`` unless ``state`` fits ``model`` and ``optimizer`` (checked before
    anything is loaded, so a refused checkpoint leaves the model and optimiser untouched)."""
    try:
        check_state_fits(model, state["model"], "model")
        saved = state["optimizer"]
        groups = saved["param_groups"]
        if [len(group["params"]) for group in groups] != [
            len(group["params"]) for group in optimizer.param_groups
        ]:
            raise ValueError("the optimizer's parameter groups differ from this model's")
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for index, values in saved["state"].items():
            for key, value in values.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.dim() > 0
                    and value.shape != parameters[int(index)].shape
                ):
                    raise ValueError(
                        f"optimizer state {key} of parameter {index} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(parameters[int(index)].shape)}"
                    )
        int(state["step"]), int(state["epoch"])
        dict(state["scheduler"]), dict(state.get("trainer") or {}), list(state.get("rng") or [])
        LoopState().load_state_dict(dict(state.get("trainer") or {}))
    except (KeyError, TypeError, IndexError, AttributeError) as error:
        # a dict that looks like a checkpoint but is not one of ours
        raise ValueError(f"malformed checkpoint ({type(error).__name__}: {error})") from None


def choose_resume_checkpoint(
    mode: str, folder: str | os.PathLike, accept: Callable[[dict], None]
) -> tuple[Path, dict] | tuple[None, None]:
    """The checkpoint ``trainer.resume`` names, as ``(path, state)``; ``(None, None)`` for a
    fresh run.

    ``none``: a fresh run. ``auto``: the newest usable checkpoint of ``folder``, skipping
    (with a warning naming the file and why) unreadable, refused or misfitting ones
    (``accept(state)`` raises ``ValueError``); when every one misfits, starting over would
    overwrite another model's checkpoints, so it refuses instead. Rank 0 chooses, every
    rank gets its choice. A path: that checkpoint, which must load and fit.

    Raises:
        CheckpointError: one line naming the file or folder.
    """
    if mode == "none":
        return None, None
    if mode != "auto":
        path = Path(mode)
        state = load_checkpoint(path)
        try:
            accept(state)
        except ValueError as error:
            raise CheckpointError(f"{path}: cannot resume from it: {error}") from None
        return path, state
    misfits: list[str] = []

    def accept_and_note(state: dict) -> None:
        try:
            accept(state)
        except ValueError as error:
            misfits.append(str(error))
            raise

    path, state = (
        load_latest_checkpoint(folder, accept=accept_and_note)
        if distributed.is_main()
        else (None, None)
    )
    refusal = None
    if path is None and misfits:
        refusal = (
            f"{folder} holds checkpoints of another model ({misfits[0]}); "
            "use another run_dir, or trainer.resume=none to overwrite them"
        )
    # every rank learns rank 0's choice (or refusal), so none waits for the others
    chosen, refusal = distributed.gather_objects((None if path is None else str(path), refusal))[0]
    if refusal is not None:
        raise CheckpointError(refusal)
    if chosen is None:
        return None, None
    return Path(chosen), state if state is not None else load_checkpoint(chosen)


# Config keys a resumed run may change: where it writes and how often, how many threads
# and workers read, and the step/epoch budget (adopted: a larger trainer.max_steps trains
# on; one below the checkpoint's step is refused, see check_resume_config).
SAFE_TO_CHANGE = (
    "run_dir",
    "force",
    "threads",
    "trainer.resume",
    "trainer.run_dir",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.keep_last",
    "trainer.tensorboard",
    "trainer.threads",
    "trainer.num_workers",
    "trainer.device",
)

# Sections of a recipe's config that only its downstream stages read (transfer,
# evaluation, which pre-training seeds run): a pre-training resumed under other values of
# these is the same pre-training (train.pretrain passes them as ``resume_ignores``).
DOWNSTREAM_SECTIONS = (
    "emotion",
    "speaker",
    "transfer",
    "head",
    "modes",
    "seeds",
    "pretrain_seeds",
    "finetune_seeds",
    "keyword",
    "fbank_n_mels",
)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, Mapping) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def config_changes(
    saved: Mapping, current: Mapping, ignore: Sequence[str] = ()
) -> list[tuple[str, object, object]]:
    """``(key, saved value, current value)`` for each dotted key whose value differs, keys
    under ``ignore`` prefixes left out (a key only one side has counts as changed).

    Example:
        >>> config_changes({"encoder": {"dim": 4, "layers": 2}, "emotion": {"folds": 5}},
        ...                {"encoder": {"dim": 8, "layers": 2}, "emotion": {"folds": 2}},
        ...                ignore=["emotion"])
        [('encoder.dim', 4, 8)]
    """
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for key in sorted(set(old) | set(new)):
        if any(key == prefix or key.startswith(prefix + ".") for prefix in ignore):
            continue
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            changes.append((key, old.get(key, "<absent>"), new.get(key, "<absent>")))
    return changes


def check_resume_config(
    path: str | os.PathLike,
    checkpoint: Checkpoint,
    config: Mapping,
    *,
    max_steps: int,
    max_epochs: int = 0,
    ignore: Sequence[str] = (),
) -> None:
    """Refuse, in one line naming the keys, to resume ``checkpoint`` under a ``config`` that
    differs from the one it was trained with, except :data:`SAFE_TO_CHANGE` (and the
    ``ignore`` prefixes). A changed step budget is adopted while the checkpoint fits in it;
    a ``max_steps`` (``max_epochs``) below the checkpoint's step (epoch) is refused, since
    the run would report a later model than its config says.

    Example:
        >>> saved = Checkpoint(model={}, step=4, config={"trainer": {"max_steps": 4}})
        >>> check_resume_config("step_4.pt", saved, {"trainer": {"max_steps": 8}}, max_steps=8)
        >>> check_resume_config("step_4.pt", saved, {"trainer": {"max_steps": 2}}, max_steps=2)
        Traceback (most recent call last):
        ...
        speechssl.checkpoint_format.CheckpointError: step_4.pt: trainer.max_steps=2 is below this checkpoint's step 4 ...
    """
    if max_steps > 0 and checkpoint.step > max_steps:
        raise CheckpointError(
            f"{path}: trainer.max_steps={max_steps} is below this checkpoint's step "
            f"{checkpoint.step} (its model would be reported under a config that stops "
            "earlier); raise trainer.max_steps, or use another run_dir or trainer.resume=none"
        )
    if max_steps == 0 and max_epochs > 0 and checkpoint.epoch > max_epochs:
        raise CheckpointError(
            f"{path}: trainer.max_epochs={max_epochs} is below this checkpoint's epoch "
            f"{checkpoint.epoch}; raise it, or use another run_dir or trainer.resume=none"
        )
    if not checkpoint.config:  # written without a config (a hand-made or very old file)
        return
    changes = config_changes(checkpoint.config, config, ignore=(*SAFE_TO_CHANGE, *ignore))
    if changes:
        shown = ", ".join(f"{key} ({old!r} -> {new!r})" for key, old, new in changes[:3])
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise CheckpointError(
            f"{path}: the config changed since this checkpoint: {shown}{more}; resume with the "
            "saved values, or use another run_dir or trainer.resume=none"
        )
