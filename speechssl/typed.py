"""Configuration typed once, at the door: one converter to config dataclasses and back.

Hydra composes OmegaConf nodes; every part of speechssl below the recipes takes a config
dataclass. :func:`to_dataclass` is the one place a node (or dict) becomes a dataclass,
checking keys and types against the schema; :func:`from_registry` does the same for the
schema a tag names (an encoder ``family``, an objective ``name``, a head ``kind``), and
:func:`to_plain` turns any of them back into the plain dict that checkpoints, exports and
``results.json`` store.

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Tiny:
    ...     name: str = "tiny"
    ...     sizes: list[int] = field(default_factory=lambda: [1, 2])
    >>> to_dataclass({"sizes": [3]}, Tiny)
    Tiny(name='tiny', sizes=[3])
    >>> from_registry({"name": "tiny"}, {"tiny": Tiny}, tag="name", what="objective")
    Tiny(name='tiny', sizes=[1, 2])
    >>> to_plain(Tiny())
    {'name': 'tiny', 'sizes': [1, 2]}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["from_registry", "to_dataclass", "to_plain"]

Schema = TypeVar("Schema")


def to_dataclass(config: Any, schema: type[Schema]) -> Schema:
    """Return ``config`` as an instance of the dataclass ``schema``, checking keys and types.

    ``config`` may be the dataclass itself, ``None`` (the defaults), a dict or a DictConfig
    (typed or not); unknown keys and values of the wrong type raise ``ValueError`` naming
    the key (one line).

    Example:
        >>> from speechssl.train.config import TrainerConfig
        >>> to_dataclass({"max_steps": 5}, TrainerConfig).max_steps
        5
    """
    if isinstance(config, schema):
        return config
    if config is None:
        return schema()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = to_plain(config)  # another schema's instance: its fields are checked below
    if not isinstance(config, (dict, DictConfig)):
        raise TypeError(f"expected a {schema.__name__} or a mapping, got {type(config).__name__}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), config)
    except OmegaConfBaseException as error:  # several error types; callers get one
        raise ValueError(f"invalid {schema.__name__}: {error}".splitlines()[0]) from None
    return OmegaConf.to_object(merged)


def from_registry(
    config: Any, registry: Mapping[str, type], *, tag: str, what: str, strict: bool = True
) -> Any:
    """The dataclass of the schema ``registry[config[tag]]``, converted by :func:`to_dataclass`.

    ``strict``: unknown keys raise ``"unknown <tag value> <what> config fields: [...]"``
    before OmegaConf sees them (the message the encoders have always given).

    Raises:
        ValueError: a missing or unknown tag (naming the known ones), unknown fields.
    """
    try:
        values = to_plain(config)
    except ValueError:
        raise ValueError(
            f"a {what} config must be a mapping, got {type(config).__name__}"
        ) from None
    name = values.get(tag)
    if name not in registry:
        raise ValueError(f"unknown {what} {tag} {name!r}; expected one of {sorted(registry)}")
    schema = registry[name]
    if strict:
        known = {field.name for field in dataclasses.fields(schema)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {name} {what} config fields: {unknown}")
    return to_dataclass(values, schema)


def to_plain(config: Any) -> dict:
    """A config dataclass, DictConfig or dict -> plain dicts/lists/strings/numbers (resolved
    interpolations; enums as their names, as OmegaConf writes them), as JSON, checkpoints and exports store them."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _plain_values(dataclasses.asdict(config))
    if isinstance(config, Mapping):
        return _plain_values(dict(config))
    raise ValueError(f"cannot turn {type(config).__name__} into a config dict")


def _plain_values(value: Any) -> Any:
    """Enums -> their names and nested OmegaConf nodes -> containers, all the way down."""
    if isinstance(value, Enum):
        return value.name  # as OmegaConf's enum_to_str
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, Mapping):
        return {key: _plain_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_values(item) for item in value)
    return value
