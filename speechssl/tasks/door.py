"""Checks at a recipe's door: the downstream options every transfer recipe shares.

Each function returns one line per problem (nothing when all is well), naming the option
as a user types it. A recipe's ``door(cfg)`` gathers them with its source folders
(:func:`speechssl.errors.source_folder_problems`); :func:`speechssl.errors.run_hydra_main`
calls it right after composing the command line, so that ``seeds=[]`` or
``emotion.modes=[bogus]`` is refused in seconds, before any data or model work.

Example:
    >>> seed_problems("seeds", [])
    ['seeds=[]: give at least one seed']
    >>> mode_problems("emotion.modes", ["fbank", "bogus"])  # doctest: +ELLIPSIS
    ["emotion.modes: unknown mode 'bogus'; expected some of ['fbank', ...]"]
    >>> label_problems("emotion.labels", ["ang", "ang"])
    ['emotion.labels: ang named twice']
"""

from __future__ import annotations

from collections.abc import Sequence

from speechssl.tasks.classification import TRANSFER_MODES
from speechssl.tasks.emotion import VALIDATION_STRATEGIES

__all__ = ["label_problems", "mode_problems", "seed_problems", "validation_problems"]


def _listed(values) -> list | None:
    """``values`` as a plain list (an OmegaConf ListConfig too); None if not a list."""
    if values is None or isinstance(values, (str, bytes)):
        return None
    try:
        return list(values)
    except TypeError:
        return None


def seed_problems(option: str, seeds, allow_none: bool = False) -> list[str]:
    """A non-empty list of distinct non-negative integers (``None`` where ``allow_none``)."""
    if seeds is None and allow_none:
        return []
    listed = _listed(seeds)
    if listed is None:
        return [f"{option}={seeds!r}: must be a list of seeds, e.g. [0, 1, 2]"]
    if not listed:
        return [f"{option}=[]: give at least one seed"]
    if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in listed):
        return [f"{option}={listed}: seeds must be integers"]
    if len(set(listed)) < len(listed):
        return [f"{option}={listed}: a seed is repeated (each seed is run once)"]
    return []


def mode_problems(option: str, modes, known: Sequence[str] = tuple(TRANSFER_MODES)) -> list[str]:
    """A non-empty list of distinct modes of :data:`TRANSFER_MODES`."""
    listed = _listed(modes)
    if listed is None:
        return [f"{option}={modes!r}: must be a list of modes, e.g. [fbank, random_frozen]"]
    if not listed:
        return [f"{option}=[]: give at least one mode of {list(known)}"]
    unknown = [mode for mode in listed if mode not in known]
    if unknown:
        return [f"{option}: unknown mode {unknown[0]!r}; expected some of {list(known)}"]
    if len(set(listed)) < len(listed):
        return [f"{option}={listed}: a mode is repeated"]
    return []


def label_problems(option: str, labels) -> list[str]:
    """A list of at least two distinct class names."""
    listed = _listed(labels)
    if listed is None or len(listed) < 2:
        return [f"{option}={labels!r}: give at least two class names"]
    repeated = sorted({str(label) for label in listed if listed.count(label) > 1})
    if repeated:
        return [f"{option}: {', '.join(repeated)} named twice"]
    return []


def validation_problems(option: str, strategy) -> list[str]:
    """One of :data:`speechssl.tasks.emotion.VALIDATION_STRATEGIES`."""
    if strategy in VALIDATION_STRATEGIES:
        return []
    return [f"{option}={strategy!r}: expected one of {list(VALIDATION_STRATEGIES)}"]
