"""wav2vec 2.0 / HuBERT waveform encoder: config, presets and model."""

from .config import (
    MEL_PRESETS,
    PRESETS,
    Wav2Vec2Config,
    hubert_base,
    hubert_large,
    hubert_mel_base,
    hubert_mel_small,
    hubert_mel_tiny,
    hubert_tiny,
    wav2vec2_base,
)
from .model import StackedFbankExtractor, Wav2Vec2Encoder, conv_output_lengths

__all__ = [
    "MEL_PRESETS",
    "PRESETS",
    "StackedFbankExtractor",
    "Wav2Vec2Config",
    "Wav2Vec2Encoder",
    "conv_output_lengths",
    "hubert_base",
    "hubert_large",
    "hubert_mel_base",
    "hubert_mel_small",
    "hubert_mel_tiny",
    "hubert_tiny",
    "wav2vec2_base",
]
