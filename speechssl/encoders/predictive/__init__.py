"""Causal encoders for predictive coding: Transformer predictive coding and APC."""

from .config import (
    APC_PRESETS,
    PRESETS,
    APCConfig,
    CausalTransformerConfig,
    apc_base,
    apc_large,
    apc_tiny,
    tpc_base,
    tpc_large,
    tpc_small,
    tpc_tiny,
)
from .model import APCEncoder, CausalTransformerEncoder

__all__ = [
    "APC_PRESETS",
    "PRESETS",
    "APCConfig",
    "APCEncoder",
    "CausalTransformerConfig",
    "CausalTransformerEncoder",
    "apc_base",
    "apc_large",
    "apc_tiny",
    "tpc_base",
    "tpc_large",
    "tpc_small",
    "tpc_tiny",
]
