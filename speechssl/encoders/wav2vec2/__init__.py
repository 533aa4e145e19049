"""wav2vec 2.0 / HuBERT waveform encoder: config, presets and model."""

from .config import PRESETS, Wav2Vec2Config, hubert_base, hubert_large, hubert_tiny, wav2vec2_base
from .model import Wav2Vec2Encoder, conv_output_lengths

__all__ = [
    "PRESETS",
    "Wav2Vec2Config",
    "Wav2Vec2Encoder",
    "conv_output_lengths",
    "hubert_base",
    "hubert_large",
    "hubert_tiny",
    "wav2vec2_base",
]
