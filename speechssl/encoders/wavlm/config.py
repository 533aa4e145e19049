"""Configuration of the WavLM waveform encoder (Chen et al., 2022, "WavLM: Large-Scale
Self-Supervised Pre-Training for Full Stack Speech Processing").

WavLM is HuBERT's architecture (the same convolutional feature extractor, projection,
convolutional position embedding and Transformer layers) with one change in attention:
a *gated relative position bias* (Sec. 2.2). Relative offsets between frames fall into
``num_buckets`` buckets (exact up to a small distance, then logarithmic up to
``max_distance``); each bucket has one learned bias per head, computed once and shared by
every layer, and each layer scales it by a gate computed from the query. The defaults are
WavLM Base (Sec. 3.1; torchaudio ``wavlm_base``; unilm ``WavLM-Base.pt``): 320 buckets,
maximum distance 800. The fairseq/unilm name of each new hyperparameter is given beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..wav2vec2.config import LARGE_SHAPE, TINY_TRANSFORMER, Wav2Vec2Config


@dataclass
class WavLMConfig(Wav2Vec2Config):
    """WavLM hyperparameters: every :class:`Wav2Vec2Config` field plus the position bias.

    Defaults are WavLM Base with torchaudio ``wavlm_base``'s dropout rates (0.1 everywhere,
    layer drop 0.1).
    """

    family: str = "wavlm"
    num_buckets: int = 320  # num_buckets (relative position buckets, both directions)
    max_distance: int = 800  # max_distance (offsets beyond it share the last bucket)
    gated_position_bias: bool = True  # gru_rel_pos (the query-dependent sigmoid gate)
    # torchaudio wavlm_base: every dropout 0.1 (encoder_ff_interm_dropout too), layer drop 0.1
    activation_dropout: float = 0.1  # activation_dropout
    layer_drop: float = 0.1  # encoder_layerdrop

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ValueError(f"num_buckets must be even and >= 4, got {self.num_buckets}")
        if self.max_distance <= self.num_buckets // 4:
            raise ValueError(
                f"max_distance ({self.max_distance}) must exceed num_buckets / 4 "
                f"({self.num_buckets // 4}), the last exactly represented offset"
            )


def wavlm_base() -> WavLMConfig:
    """WavLM Base (Chen et al., 2022; 94.7 M parameters): HuBERT Base's shape + gated
    relative position bias (320 buckets, max distance 800); torchaudio ``wavlm_base``'s
    dropouts (the config's defaults)."""
    return WavLMConfig()


def wavlm_base_plus() -> WavLMConfig:
    """WavLM Base+ (Chen et al., 2022): the Base architecture, pre-trained on 94k hours."""
    return wavlm_base()


def wavlm_large() -> WavLMConfig:
    """WavLM Large (Chen et al., 2022; torchaudio ``wavlm_large``; 316.6 M parameters): 24
    pre-LN layers, 1024 wide, 16 heads, FFN 4096, layer-norm feature extractor with conv
    bias, gated relative position bias; Base's dropouts but none in the FFN
    (``encoder_ff_interm_dropout`` 0.0)."""
    return replace(wavlm_base(), **LARGE_SHAPE, activation_dropout=0.0)


def wavlm_tiny() -> WavLMConfig:
    """WavLM-architecture encoder sized for CPU tests and debug runs: :func:`hubert_tiny`'s
    shape with a gated relative position bias of 32 buckets (max distance 128, for the
    short clips it sees)."""
    return replace(
        wavlm_base(), conv_channels=[32] * 7, **TINY_TRANSFORMER, num_buckets=32, max_distance=128
    )


PRESETS = {
    "tiny": wavlm_tiny,
    "base": wavlm_base,
    "base_plus": wavlm_base_plus,
    "large": wavlm_large,
}
