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

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from speechssl.demo import demo_path

__all__ = [
    "CONF_DIR",
    "SCHEMA_PACKAGES",
    "compose",
    "config_schemas",
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


def _rank_suffix() -> str:
    """``""`` in a plain run and on torchrun's rank 0, ``".rank<N>"`` on the other ranks."""
    rank = int(os.environ.get("RANK", "0") or 0)
    return f".rank{rank}" if rank > 0 else ""


def register_configs() -> dict[str, dict[str, type]]:
    """Store every schema as ``<group>/<name>_schema`` in Hydra's ConfigStore (idempotent),
    the ``${demo:<corpus>}`` resolver that points at the embedded demo corpus, and
    ``${rank_suffix:}``, which keeps torchrun's ranks out of each other's Hydra files
    (``.hydra.rank1/``, ``run.rank1.log``)."""
    if not OmegaConf.has_resolver("demo"):
        OmegaConf.register_new_resolver("demo", _demo_path)
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
