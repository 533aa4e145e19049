"""Filterbank front end + Conv2d subsampling + Conformer encoder."""

from .config import PRESETS, ConformerConfig, conformer_base, conformer_large, conformer_tiny
from .model import ConformerEncoder

__all__ = [
    "PRESETS",
    "ConformerConfig",
    "ConformerEncoder",
    "conformer_base",
    "conformer_large",
    "conformer_tiny",
]
