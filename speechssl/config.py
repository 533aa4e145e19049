"""Hydra configuration: the config folder, schema registration and composition.

Every package that owns config dataclasses exposes ``CONFIG_SCHEMAS = {group: {name:
dataclass}}``; :func:`register_configs` stores each as ``<group>/<name>_schema`` in Hydra's
ConfigStore. A YAML file under ``speechssl/conf/<group>/`` then starts with
``defaults: [<name>_schema, _self_]`` and lists only what it changes; unknown keys and
wrong types fail when the config is composed.

Recipes use ``@hydra.main(config_path=str(CONF_DIR), config_name=..., version_base="1.3")``
after calling :func:`register_configs`; tests and notebooks use :func:`compose`.

Example:
    >>> cfg = compose(overrides=["+trainer=cpu", "+optim=adamw", "trainer.max_steps=7"])
    >>> cfg.trainer.max_steps, cfg.optim.schedule.value
    (7, 'polynomial')
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from speechssl.demo import demo_path
from speechssl.encoders import FAMILIES, PRESETS
from speechssl.typed import to_plain

__all__ = [
    "CONF_DIR",
    "SCHEMA_PACKAGES",
    "check_types",
    "check_values",
    "compose",
    "config_schemas",
    "encoder_preset_yaml",
    "register_configs",
]

CONF_DIR = Path(__file__).resolve().parent / "conf"

# Packages whose CONFIG_SCHEMAS are registered (those that exist are imported).
SCHEMA_PACKAGES = (
    "speechssl.train",
    "speechssl.data",
    "speechssl.features",
    "speechssl.encoders",
    "speechssl.objectives",
    "speechssl.heads",
    "speechssl.tasks",
    "speechssl.tts",
)


def config_schemas() -> dict[str, dict[str, type]]:
    """``{group: {name: dataclass}}`` merged over the packages of ``SCHEMA_PACKAGES`` that exist."""
    merged: dict[str, dict[str, type]] = {}
    for package in SCHEMA_PACKAGES:
        try:
            module = importlib.import_module(package)
        except ModuleNotFoundError as error:
            if error.name is not None and package.startswith(error.name):
                continue  # the package does not exist (yet); a broken import still raises
            raise
        for group, schemas in getattr(module, "CONFIG_SCHEMAS", {}).items():
            for name, schema in schemas.items():
                known = merged.setdefault(group, {}).get(name)
                if known is not None and known is not schema:
                    raise ValueError(f"two schemas named {group}/{name}: {known} and {schema}")
                merged[group][name] = schema
    return merged


def _demo_path(corpus: str) -> str:
    return str(demo_path(corpus))


def _dev_corpus_path(name: str) -> str:
    """``data/<name>`` of the repository checkout (the development corpus, outside the wheel);
    a missing folder is reported by the recipe's source-folder check in one line."""
    return str(Path(__file__).resolve().parents[1] / "data" / name)


def _rank_suffix() -> str:
    """``""`` in a plain run and on torchrun's rank 0, ``".rank<N>"`` on the other ranks."""
    rank = int(os.environ.get("RANK", "0") or 0)
    return f".rank{rank}" if rank > 0 else ""


def register_configs() -> dict[str, dict[str, type]]:
    """Store every schema as ``<group>/<name>_schema`` in Hydra's ConfigStore (idempotent),
    the ``${demo:<corpus>}`` resolver that points at the embedded demo corpus,
    ``${dev_corpus:<name>}`` (the checkout's ``data/<name>``, e.g. Mini LibriSpeech), and
    ``${rank_suffix:}``, which keeps torchrun's ranks out of each other's Hydra files
    (``.hydra.rank1/``, ``run.rank1.log``)."""
    if not OmegaConf.has_resolver("demo"):
        OmegaConf.register_new_resolver("demo", _demo_path)
    if not OmegaConf.has_resolver("dev_corpus"):
        OmegaConf.register_new_resolver("dev_corpus", _dev_corpus_path)
    if not OmegaConf.has_resolver("rank_suffix"):
        OmegaConf.register_new_resolver("rank_suffix", _rank_suffix)
    schemas = config_schemas()
    store = ConfigStore.instance()
    for group, named in schemas.items():
        for name, schema in named.items():
            store.store(group=group, name=f"{name}_schema", node=schema)
    return schemas


def compose(config_name: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` (or nothing) with command-line style overrides.

    Args:
        config_name: a top config (e.g. a recipe's ``hubert``), or None to build only from
            ``overrides`` such as ``+trainer=cpu``.
        overrides: Hydra overrides, e.g. ``["debug=tiny", "trainer.max_steps=5"]``.

    Raises:
        ValueError: an unknown key, a value of the wrong type, or a missing config, with
            Hydra's message.
    """
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))
    except Exception as error:  # Hydra/OmegaConf raise many types; callers get one
        reason = " ".join(str(error).split())
        if error.__cause__ is not None:  # e.g. the type error behind "Error merging override"
            reason += ": " + str(error.__cause__).splitlines()[0]
        raise ValueError(
            f"cannot compose {config_name or 'config'} {list(overrides)}: {reason}"
        ) from error


# ---------------------------------------------------------------------------------------
# conf/encoder/<preset>.yaml, written from the Python presets (tools/write_encoder_configs.py)


def encoder_preset_yaml(name: str) -> str:
    """The text of ``conf/encoder/<name>.yaml``: the Python preset ``PRESETS[name]`` as the
    fields that differ from its family's defaults, under its docstring.

    The Python preset is the one place of the values; ``tools/write_encoder_configs.py``
    writes every file and a test keeps them equal.

    Example:
        >>> print(encoder_preset_yaml("tpc_tiny").split("defaults:")[1])
        <BLANKLINE>
          - predictive_transformer_schema
          - _self_
        <BLANKLINE>
        family: predictive_transformer
        n_mels: 40
        embed_dim: 64
        num_layers: 2
        num_heads: 4
        ffn_dim: 128
        <BLANKLINE>
    """
    factory = PRESETS[name]
    config = factory()
    defaults = dataclasses.asdict(FAMILIES[config.family][0]())
    values = dataclasses.asdict(config)
    changed = {"family": config.family} | {
        key: value for key, value in values.items() if value != defaults[key]
    }
    summary = " ".join(inspect.getdoc(factory).split("\n\n")[0].split())
    header = [
        f"GENERATED from {factory.__module__}.{factory.__qualname__} by",
        "tools/write_encoder_configs.py: edit the Python preset, then rerun the tool.",
        *textwrap.wrap(summary, width=96),
    ]
    lines = [f"# {line}" for line in header]
    lines += ["defaults:", f"  - {config.family}_schema", "  - _self_", ""]
    for key, value in changed.items():  # lists in flow style: `conv_channels: [32, 32]`
        flow = isinstance(value, (list, tuple))
        lines.append(yaml.safe_dump({key: value}, default_flow_style=flow).strip().strip("{}"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# one validation pass over the values, at the door of every recipe

# keys whose values may be negative (dB offsets, normalisation means, seeds)
_MAY_BE_NEGATIVE = re.compile(r"(_db|_mean|^seed)$")
# probabilities and fractions: [0, 1]
_UNIT_INTERVAL = re.compile(
    r"(_prob|^dropout|_dropout|_drop|dropout_input|_overlap|_fraction|^fractions|_threshold|^betas)$"
)
# sizes, counts and rates that must be > 0
_POSITIVE = re.compile(
    r"(_dim|_dims|_size|_channels|_kernels?|_strides?|_length|_clusters|_heads|_layers|_classes"
    r"|_symbols|_speakers|_vars|_negatives|_positions|_every|_per_step|_iters|_seconds|_rate"
    r"|_temperature|_buckets|_bins|^n_fft|^n_mels|^groups|^lr|^temperature|^grad_accum"
    r"|^iterations|^eps|_eps|^max_consecutive_nonfinite)$"
)
# counts where 0 means "none" or "off"
_ZERO_ALLOWED = {"num_workers", "num_alignment_plots", "num_test", "eval_every"}


def _value_problem(key: str, value) -> str | None:
    """Why ``value`` is out of range for an option named ``key``, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if _UNIT_INTERVAL.search(key):
        return None if 0 <= value <= 1 else "must lie in [0, 1]"
    if _POSITIVE.search(key) and key not in _ZERO_ALLOWED:
        return None if value > 0 else "must be > 0"
    if value < 0 and not _MAY_BE_NEGATIVE.search(key):
        return "must be >= 0"
    return None


def check_values(config) -> list[str]:
    """One line per out-of-range value in ``config`` (``head.projector_dim=-1: must be > 0``).

    The rules follow the option names used across the config groups: probabilities and
    fractions lie in [0, 1]; sizes, counts, rates and intervals are > 0; every other number
    is >= 0 and finite, except dB offsets, means and seeds. A recipe calls this before any
    work, so a bad value never fails a run after minutes of pre-training.

    Example:
        >>> check_values({"head": {"projector_dim": -1}, "objective": {"mask_prob": 2.0}})
        ['head.projector_dim=-1: must be > 0', 'objective.mask_prob=2.0: must lie in [0, 1]']
    """
    structured = config if isinstance(config, DictConfig) else None
    try:
        if structured is not None:
            config = to_plain(structured)
    except Exception as error:  # noqa: BLE001 - OmegaConf raises many types for a bad interpolation
        return [f"config: {' '.join(str(error).split())}"]
    problems: list[str] = []

    def walk(node, path: str, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{path}.{name}" if path else str(name), str(name))
        elif isinstance(node, (list, tuple)):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]", key)
        else:
            problem = _value_problem(key, node)
            if key == "device" and str(node).startswith("cuda") and not torch.cuda.is_available():
                problem = "CUDA is not available on this machine; use cpu"
            if problem:
                problems.append(f"{path}={node}: {problem}")

    walk(config, "", "")
    if structured is not None:
        problems += _dataclass_problems(structured, {problem.split(".")[0] for problem in problems})
    return problems


def _dataclass_problems(config: DictConfig, flagged: set[str]) -> list[str]:
    """Build each group's dataclass (its ``__post_init__`` checks cross-field rules) for the
    groups whose values passed the name rules; one line per group that refuses."""
    problems = []
    for group in config:
        node = config[group]
        if group in flagged or not isinstance(node, DictConfig):
            continue
        if dataclasses.is_dataclass(OmegaConf.get_type(node)):
            try:
                OmegaConf.to_object(node)
            except ValueError as error:
                problems.append(f"{group}: {' '.join(str(error).split())}")
    return problems


def _leaves(node, path: str = ""):
    """``(dotted path, value)`` of every leaf of plain dicts/lists."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{path}.{name}" if path else str(name))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{path}[{index}]")
    else:
        yield path, node


def _kind(value) -> str | None:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return None


def check_types(config, reference) -> list[str]:
    """One line per value of ``config`` whose type differs from the same key in
    ``reference`` (the recipe's defaults), for the parts no dataclass types (a recipe's own
    sections such as ``emotion.max_folds`` or ``seed``; a group typed by a dataclass is
    skipped when ``config`` is a ``DictConfig``).

    An integer where a number is expected is fine; ``None`` on either side is not checked.

    Example:
        >>> check_types({"seed": "x", "emotion": {"max_folds": 2}}, {"seed": 0, "emotion": {"max_folds": 0}})
        ["seed='x': must be an integer"]
    """
    # groups typed by a dataclass are checked by OmegaConf itself, whichever option
    # (schema) the user picked; only the untyped sections are compared with the defaults
    typed = set()
    if isinstance(config, DictConfig):
        typed = {
            group
            for group in config
            if isinstance(config[group], DictConfig)
            and dataclasses.is_dataclass(OmegaConf.get_type(config[group]))
        }
    try:
        if isinstance(config, DictConfig):
            config = to_plain(config)
        if isinstance(reference, DictConfig):
            reference = to_plain(reference)
    except Exception as error:  # noqa: BLE001 - OmegaConf raises many types for a bad interpolation
        return [f"config: {' '.join(str(error).split())}"]
    expected = dict(_leaves(reference))
    problems = []
    for path, value in _leaves(config):
        if re.split(r"[.\[]", path, maxsplit=1)[0] in typed:
            continue
        wanted, got = _kind(expected.get(path)), _kind(value)
        # a string option may hold anything the command line parses as a number (a
        # folder named "3"): only numbers and booleans are checked
        if wanted in (None, "a string") or got is None or wanted == got:
            continue
        if wanted == "a number" and got == "an integer":
            continue
        problems.append(f"{path}={value!r}: must be {wanted}")
    return problems
