"""Filterbank front end + Conv2d subsampling + Transformer encoder."""

from .config import (
    PRESETS,
    FbankTransformerConfig,
    fbank_transformer_base,
    fbank_transformer_large,
    fbank_transformer_tiny,
)
from .model import FbankTransformerEncoder

__all__ = [
    "PRESETS",
    "FbankTransformerConfig",
    "FbankTransformerEncoder",
    "fbank_transformer_base",
    "fbank_transformer_large",
    "fbank_transformer_tiny",
]
