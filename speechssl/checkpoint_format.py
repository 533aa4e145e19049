"""The one owner of the training checkpoint format: a typed record, written and read here.

A training checkpoint is a ``torch.save`` dict of plain values (read back with
``torch.load(weights_only=True)``). :class:`Checkpoint` is its typed record and the only
code that names its keys: the Trainer writes one (``Trainer._save``), ``load_encoder``
rebuilds the encoder from its :class:`EncoderSpec`, transfer reads the best dev value from
its trainer state, and ``predict``'s ``model.json`` carries the same :class:`EncoderSpec`.

Keys (format version 1)::

    format_version  1 (absent in files written before this module: version 0, same keys)
    model           the model's state dict
    step, epoch     where the run stood
    config          the run's resolved configuration (plain dict)
    trainer         the loop state: best_value, best_step, train_loss, windows, world_size...
    encoder_spec    {"family", "config", "prefix"}: how to rebuild the encoder inside model
    optimizer, scheduler, scaler, sampler, rng   what an exact resume needs

Files: :func:`write_checkpoint` refuses, at save time, anything ``torch.load(weights_only=True)``
could not read, and writes atomically (temporary file, fsync, rename); :func:`read_checkpoint`
and :func:`load_checkpoint` read weights-only, so a file carrying a pickled object that would
run code is refused (:class:`UnsafeCheckpointError`), never run.

Example:
    >>> import torch
    >>> record = Checkpoint(model={"encoder.w": torch.ones(2)}, step=3,
    ...     trainer={"best_value": 0.25}, encoder_spec=EncoderSpec("fbank", {"n_mels": 40},
    ...     prefix="encoder."))
    >>> state = record.to_dict()
    >>> state["format_version"], sorted(state["encoder_spec"])
    (1, ['config', 'family', 'prefix'])
    >>> again = Checkpoint.from_dict(state)
    >>> again.best_value, again.encoder_spec.family, again.encoder_spec.weights(again.model)
    (0.25, 'fbank', {'w': tensor([1., 1.])})
    >>> old = {"model": {}, "step": 2, "trainer": {"best_value": 1.0}}  # a version-0 dict
    >>> Checkpoint.from_dict(old).format_version, Checkpoint.from_dict(old).best_value
    (0, 1.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from speechssl.safe_io import (
    UnreadableFileError,
    UnsafeFileError,
    load_torch_file,
    save_torch_atomic,
)

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "EncoderSpec",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]

FORMAT_VERSION = 1

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
    """A checkpoint that cannot be used (truncated, not a checkpoint, missing keys); the
    message is one line naming the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holding objects outside the safe types: refused, never unpickled.

    Resuming skips it like any other unusable checkpoint (with a warning); loading it by
    name raises this."""


@dataclass(frozen=True)
class EncoderSpec:
    """How to rebuild an encoder: its family, its config, and where its weights sit in a
    larger state dict (``prefix``: ``"encoder."`` inside a Trainer's model)."""

    family: str
    config: dict
    prefix: str = ""

    @classmethod
    def of(cls, encoder, prefix: str = "") -> EncoderSpec:
        """The spec of an encoder (anything with ``spec() -> {"family", "config"}``)."""
        spec = encoder.spec()
        return cls(str(spec["family"]), dict(spec["config"]), prefix)

    @classmethod
    def from_dict(cls, value, source: str = "checkpoint") -> EncoderSpec:
        """Parse ``{"family", "config"[, "prefix"]}``; one-line ``CheckpointError``."""
        if (
            not isinstance(value, Mapping)
            or not isinstance(value.get("family"), str)
            or not isinstance(value.get("config"), Mapping)
            or not isinstance(value.get("prefix", ""), str)
        ):
            raise CheckpointError(
                f"{source}: encoder_spec needs a 'family' string and a 'config' object"
            )
        return cls(value["family"], dict(value["config"]), value.get("prefix", ""))

    def to_dict(self, with_prefix: bool = True) -> dict:
        spec = {"family": self.family, "config": dict(self.config)}
        return {**spec, "prefix": self.prefix} if with_prefix else spec

    def weights(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The encoder's entries of ``state``, without the prefix."""
        size = len(self.prefix)
        return {key[size:]: value for key, value in state.items() if key.startswith(self.prefix)}


@dataclass
class Checkpoint:
    """A training checkpoint as a typed record (see the module docstring for the keys)."""

    model: dict[str, Tensor]
    step: int
    epoch: int = 0
    config: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    encoder_spec: EncoderSpec | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    sampler: dict | None = None
    rng: list | None = None
    format_version: int = FORMAT_VERSION

    @property
    def best_value(self) -> float | None:
        """The best value of the early-stopping metric (None: no dev evaluation kept one)."""
        value = self.trainer.get("best_value")
        return None if value is None else float(value)

    @property
    def last_evaluation(self) -> dict[str, float]:
        """The dev metrics of the evaluation just before this checkpoint (empty: none)."""
        return dict(self.trainer.get("last_evaluation") or {})

    def to_dict(self) -> dict:
        """The plain dict ``torch.save`` writes (optional parts left out when None)."""
        state = {
            "format_version": self.format_version,
            "model": self.model,
            "step": self.step,
            "epoch": self.epoch,
            "config": self.config,
            "trainer": self.trainer,
        }
        if self.encoder_spec is not None:
            state["encoder_spec"] = self.encoder_spec.to_dict()
        for name in ("optimizer", "scheduler", "scaler", "sampler", "rng"):
            if getattr(self, name) is not None:
                state[name] = getattr(self, name)
        return state

    @classmethod
    def from_dict(cls, state, source: str = "checkpoint") -> Checkpoint:
        """Read a checkpoint dict of any version (0: before ``format_version`` existed, the
        same keys). Raises ``CheckpointError`` (one line naming ``source``)."""
        if not isinstance(state, Mapping) or "model" not in state or "step" not in state:
            found = (
                type(state).__name__ if not isinstance(state, Mapping) else "a dict without them"
            )
            raise CheckpointError(
                f"{source}: not a speechssl checkpoint (no 'model'/'step' keys: {found})"
            )
        version = state.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: checkpoint format version {version!r}; this speechssl reads "
                f"versions 0 to {FORMAT_VERSION} (upgrade speechssl)"
            )
        try:
            spec = state.get("encoder_spec")
            record = cls(
                model=state["model"],
                step=int(state["step"]),
                epoch=int(state.get("epoch", 0)),
                config=dict(state.get("config") or {}),
                trainer=dict(state.get("trainer") or {}),
                encoder_spec=None if spec is None else EncoderSpec.from_dict(spec, source),
                format_version=version,
                **{
                    name: state.get(name)
                    for name in ("optimizer", "scheduler", "scaler", "sampler", "rng")
                },
            )
        except (TypeError, ValueError) as error:
            if isinstance(error, CheckpointError):
                raise
            raise CheckpointError(f"{source}: malformed checkpoint ({error})") from None
        if not isinstance(record.model, Mapping):
            raise CheckpointError(f"{source}: the checkpoint's 'model' is not a state dict")
        return record


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


def write_checkpoint(checkpoint: Checkpoint | dict, path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically and durably (temp file + fsync + rename + fsync of the
    folder): after a crash ``path`` holds the previous complete file or the new one."""
    state = checkpoint.to_dict() if isinstance(checkpoint, Checkpoint) else checkpoint
    _check_safe(state)
    return save_torch_atomic(state, Path(path), durable=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict at ``path``, read weights-only and checked to be one
    (:meth:`Checkpoint.from_dict`).

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
    Checkpoint.from_dict(state, str(path))
    return state


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """:func:`load_checkpoint` as a :class:`Checkpoint` record."""
    return Checkpoint.from_dict(load_checkpoint(path, map_location), str(path))
