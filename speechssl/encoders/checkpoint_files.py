"""Read any PyTorch checkpoint a user brings, weights-only, in one pass.

Training checkpoints and torchaudio state dicts hold only tensors and containers.
fairseq and unilm (WavLM) files also pickle their config: an ``argparse.Namespace``,
omegaconf nodes, fairseq enums. :func:`read_checkpoint` lists the classes a zip-format file
names (a static scan of its pickle, no code run), allows the short list a checkpoint may
need (config containers, and inert stand-ins for ``fairseq.*`` classes) and unpickles the
file once with ``torch.load(weights_only=True)``. A class outside that list is refused,
never run. Errors are one line.

Example:
    >>> import argparse, tempfile, torch
    >>> path = tempfile.mktemp(suffix=".pt")
    >>> torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(a=1)}, path)
    >>> payload = read_checkpoint(path)
    >>> payload["args"].a, payload["model"]["w"].shape
    (1, torch.Size([2]))
"""

from __future__ import annotations

import argparse
import builtins
import collections
import importlib
import os
import pickle
import re
import typing
import zipfile
from pathlib import Path

import torch

__all__ = ["allowed_global", "read_checkpoint"]

# builtins a fairseq checkpoint pickles besides tensors; everything else is refused
_SAFE_BUILTINS = {
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "int",
    "float",
    "bool",
    "bytes",
    "object",
    "NoneType",
}


def _stub_class(qualified_name: str) -> type:
    """An inert stand-in for a fairseq class (e.g. an enum in ``cfg``): it stores whatever
    the pickle gives it and runs no code from the checkpoint."""
    module, _, name = qualified_name.rpartition(".")

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    stub = type(
        name, (), {"__init__": __init__, "__setstate__": __setstate__, "__module__": module}
    )
    stub.__qualname__ = name
    return stub


def allowed_global(qualified_name: str):
    """The object to allow for a global a checkpoint names, or None to refuse it."""
    module, _, name = qualified_name.rpartition(".")
    module = module or "builtins"  # torch names builtins without their module
    if qualified_name == "argparse.Namespace":
        return argparse.Namespace
    if module == "collections" and name in ("OrderedDict", "defaultdict"):
        return getattr(collections, name)
    if module == "typing" and name in ("Any", "Optional", "Union", "List", "Dict", "Tuple"):
        return getattr(typing, name)
    if module == "builtins" and name in _SAFE_BUILTINS:
        return type(None) if name == "NoneType" else getattr(builtins, name)
    if module.split(".")[0] == "omegaconf":
        # omegaconf's containers and nodes only hold config values
        candidate = getattr(importlib.import_module(module), name, None)
        return candidate if isinstance(candidate, type) else None
    if module.split(".")[0] == "fairseq":
        return _stub_class(qualified_name)
    return None


def _allow(path: Path, names: list[str]) -> list:
    allowed = []
    for name in names:
        allowed_object = allowed_global(name)
        if allowed_object is None:
            raise ValueError(f"{path}: refusing to unpickle {name}; no encoder checkpoint needs it")
        allowed.append(allowed_object)
    return allowed


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


def read_checkpoint(path: str | os.PathLike):
    """Unpickle the ``torch.save`` file at ``path`` weights-only (see the module docstring).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a truncated/corrupt file, not a PyTorch file, or one that names a class
            outside the allowed list (one line each).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    allowed: list = []
    if zipfile.is_zipfile(path):
        try:
            allowed = _allow(path, torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception as error:  # noqa: BLE001 - a damaged zip fails in many ways
            raise ValueError(
                f"{path}: truncated or corrupt checkpoint ({_first_line(error)})"
            ) from None
    # a legacy (non-zip) file cannot be scanned: allow what each refusal names, one by one
    for _ in range(64):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            match = re.search(r"GLOBAL ([\w\.]+)", str(error))
            if match is None:
                raise ValueError(
                    f"{path}: not a readable PyTorch checkpoint ({_first_line(error)})"
                ) from None
            allowed += _allow(path, [match.group(1)])
        except Exception as error:  # noqa: BLE001 - torch raises many kinds on a damaged file
            raise ValueError(
                f"{path}: truncated or corrupt checkpoint ({type(error).__name__}: "
                f"{_first_line(error)})"
            ) from None
    raise ValueError(f"{path}: too many unknown classes in the checkpoint")
