"""WavLM waveform encoder (wav2vec 2.0 / HuBERT with gated relative position bias):
config, presets, model and converters (``convert``)."""

from .config import PRESETS, WavLMConfig, wavlm_base, wavlm_base_plus, wavlm_large, wavlm_tiny
from .model import GatedRelativeAttention, WavLMEncoder, relative_position_buckets

__all__ = [
    "PRESETS",
    "GatedRelativeAttention",
    "WavLMConfig",
    "WavLMEncoder",
    "relative_position_buckets",
    "wavlm_base",
    "wavlm_base_plus",
    "wavlm_large",
    "wavlm_tiny",
]
