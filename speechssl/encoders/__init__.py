"""Encoders every recipe pre-trains and every head reads.

One package per family, each with a config dataclass (paper-cited defaults) and presets::

    >>> import torch
    >>> from speechssl.encoders import build_encoder
    >>> encoder = build_encoder("hubert_tiny", num_layers=3).eval()
    >>> out = encoder(torch.randn(1, 16000), torch.tensor([16000]))
    >>> len(out.hidden_states), tuple(out.last_hidden_state.shape)
    (4, (1, 49, 64))

Families: ``wav2vec2`` (wav2vec 2.0 / HuBERT; ``hubert_mel_*`` presets take log-mel
filterbanks instead of the waveform CNN: ``front_end="fbank"``), ``wavlm`` (WavLM), ``fbank_transformer``, ``conformer``,
``predictive_transformer`` (causal Transformer predictive coding) and ``apc``.

Every encoder runs under ``torch.compile`` (tested: graph capture with the ``eager``
backend, outputs and gradients equal to eager mode). TorchScript is not supported: the
encoders branch on shapes in Python (empty batches, layer drop) and return tuples of
variable length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from speechssl.typed import from_registry, to_plain

from .base import Encoder, EncoderOutput
from .conformer import PRESETS as _CONFORMER_PRESETS
from .conformer import ConformerConfig, ConformerEncoder
from .fbank_transformer import PRESETS as _FBANK_TRANSFORMER_PRESETS
from .fbank_transformer import FbankTransformerConfig, FbankTransformerEncoder
from .fbank_upstream import FbankUpstream, FbankUpstreamConfig
from .predictive import (
    APC_PRESETS as _APC_PRESETS,
)
from .predictive import (
    PRESETS as _TPC_PRESETS,
)
from .predictive import (
    APCConfig,
    APCEncoder,
    CausalTransformerConfig,
    CausalTransformerEncoder,
)
from .wav2vec2 import MEL_PRESETS as _HUBERT_MEL_PRESETS
from .wav2vec2 import PRESETS as _WAV2VEC2_PRESETS
from .wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder, wav2vec2_base
from .wavlm import PRESETS as _WAVLM_PRESETS
from .wavlm import WavLMConfig, WavLMEncoder

# family name -> (config dataclass, encoder class)
FAMILIES: dict[str, tuple[type, type[Encoder]]] = {
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Encoder),
    "wavlm": (WavLMConfig, WavLMEncoder),
    "fbank_transformer": (FbankTransformerConfig, FbankTransformerEncoder),
    "conformer": (ConformerConfig, ConformerEncoder),
    "predictive_transformer": (CausalTransformerConfig, CausalTransformerEncoder),
    "apc": (APCConfig, APCEncoder),
    "fbank": (FbankUpstreamConfig, FbankUpstream),  # the FBANK baseline: no learned layers
}

# preset name -> config factory; a family's ``tiny``/``base``/``large`` under its prefix
PRESETS: dict[str, Callable[[], Any]] = {
    **{f"hubert_{size}": factory for size, factory in _WAV2VEC2_PRESETS.items()},
    **{f"hubert_mel_{size}": factory for size, factory in _HUBERT_MEL_PRESETS.items()},
    "wav2vec2_base": wav2vec2_base,
    **{f"wavlm_{size}": factory for size, factory in _WAVLM_PRESETS.items()},
    **{
        f"fbank_transformer_{size}": factory for size, factory in _FBANK_TRANSFORMER_PRESETS.items()
    },
    **{f"conformer_{size}": factory for size, factory in _CONFORMER_PRESETS.items()},
    **{f"tpc_{size}": factory for size, factory in _TPC_PRESETS.items()},
    **{f"apc_{size}": factory for size, factory in _APC_PRESETS.items()},
    "apc": _APC_PRESETS["base"],
}

# Hydra structured-config schemas: registered as ``encoder/<name>_schema``
CONFIG_SCHEMAS: dict[str, dict[str, type]] = {
    "encoder": {name: config_class for name, (config_class, _) in FAMILIES.items()}
}


def config_from_dict(values: Any) -> Any:
    """``{"family": ..., <fields>}`` (a dict or OmegaConf node) -> that family's config
    dataclass, through the one converter (:func:`speechssl.typed.from_registry`)."""
    schemas = {family: config_class for family, (config_class, _) in FAMILIES.items()}
    return from_registry(values, schemas, tag="family", what="encoder")


def build_config(family_or_config: Any = "hubert_base", **overrides) -> Any:
    """A preset name, family name, config dataclass or dict -> config dataclass (+ overrides)."""
    source = family_or_config
    if isinstance(source, str):
        if source in PRESETS:
            config = PRESETS[source]()
        elif source in FAMILIES:
            config = FAMILIES[source][0]()
        else:
            raise ValueError(
                f"unknown encoder {source!r}; presets: {sorted(PRESETS)}; families: {sorted(FAMILIES)}"
            )
    elif dataclasses.is_dataclass(source) and not isinstance(source, type):
        config = source
    else:
        values = to_plain(source)
        # an encoder spec {"family", "config"} as written in checkpoints and exports
        if "config" in values and isinstance(values["config"], dict):
            values = {**values["config"], "family": values.get("family")}
        config = config_from_dict(values)
    if overrides:
        config = config_from_dict({**to_plain(config), **overrides})
    return config


def build_encoder(family_or_config: Any = "hubert_base", **overrides) -> Encoder:
    """Build an encoder from a preset name (``"hubert_base"``), a family name, a config
    dataclass, a config dict with ``family``, or a spec ``{"family", "config"}``.

    Keyword overrides replace config fields: ``build_encoder("hubert_base", num_layers=6)``.
    """
    config = build_config(family_or_config, **overrides)
    return FAMILIES[config.family][1](config)


__all__ = [
    "CONFIG_SCHEMAS",
    "FAMILIES",
    "PRESETS",
    "APCConfig",
    "APCEncoder",
    "CausalTransformerConfig",
    "CausalTransformerEncoder",
    "ConformerConfig",
    "ConformerEncoder",
    "Encoder",
    "EncoderOutput",
    "FbankTransformerConfig",
    "FbankTransformerEncoder",
    "FbankUpstream",
    "FbankUpstreamConfig",
    "Wav2Vec2Config",
    "Wav2Vec2Encoder",
    "WavLMConfig",
    "WavLMEncoder",
    "build_config",
    "build_encoder",
    "config_from_dict",
]
