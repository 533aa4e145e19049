"""TTS pre-training study parts: text front end, multi-speaker Tacotron 2, vocoders, metrics.

Modules:
    text        character front end with English normalisation (no downloads)
    data        ``TTSBatch``, ``TTSDataset``, ``collate_tts``
    model       ``TacotronConfig`` (presets ``tiny``/``base``), ``TacotronTTS``
    losses      masked mel / stop-token / guided-attention losses
    vocoder     Griffin-Lim and user TorchScript vocoders (``load_vocoder``)
    metrics     MCD-DTW, log-F0 RMSE, voicing error, attention focus/diagonality, stop error
    similarity  character n-gram TF-IDF similarity to training text, and its bins
    subsets     nested seeded pre-training fractions
    plots       metric-vs-fraction lines per text bin, alignment images

Example:
    >>> from speechssl.tts import TacotronConfig, TacotronTTS
    >>> model = TacotronTTS(TacotronConfig.preset("tiny"))
    >>> model.frontend.normalize("Mr. Smith, 1823.")
    'mister smith, eighteen twenty-three.'
"""

from speechssl.tts.data import TTSBatch, TTSDataset, collate_tts
from speechssl.tts.losses import guided_attention_loss, guided_attention_weights
from speechssl.tts.metrics import (
    attention_diagonality,
    attention_focus_rate,
    f0_metrics,
    mel_cepstral_distortion_dtw,
    stop_length_error,
    utterance_metrics,
)
from speechssl.tts.model import SynthesisOutput, TacotronConfig, TacotronTTS
from speechssl.tts.similarity import OOD_BIN, TrainingTextSimilarity, similarity_bins
from speechssl.tts.subsets import nested_fractions
from speechssl.tts.text import SYMBOLS, CharacterFrontend, normalize_text
from speechssl.tts.vocoder import GriffinLimVocoder, TorchScriptVocoder, Vocoder, load_vocoder

# Hydra group "tts": registered by speechssl.config.register_configs() as tacotron2_schema.
CONFIG_SCHEMAS = {"tts": {"tacotron2": TacotronConfig}}

__all__ = [
    "CONFIG_SCHEMAS",
    "OOD_BIN",
    "SYMBOLS",
    "CharacterFrontend",
    "GriffinLimVocoder",
    "SynthesisOutput",
    "TTSBatch",
    "TTSDataset",
    "TacotronConfig",
    "TacotronTTS",
    "TorchScriptVocoder",
    "TrainingTextSimilarity",
    "Vocoder",
    "attention_diagonality",
    "attention_focus_rate",
    "collate_tts",
    "f0_metrics",
    "guided_attention_loss",
    "guided_attention_weights",
    "load_vocoder",
    "mel_cepstral_distortion_dtw",
    "nested_fractions",
    "normalize_text",
    "similarity_bins",
    "stop_length_error",
    "utterance_metrics",
]
