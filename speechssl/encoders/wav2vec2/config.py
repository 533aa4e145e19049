"""Configuration of the wav2vec 2.0 / HuBERT waveform encoder.

Defaults are HuBERT Base (Hsu et al., 2021, "HuBERT: Self-Supervised Speech Representation
Learning by Masked Prediction of Hidden Units", Sec. IV-C and fairseq
``examples/hubert/config/pretrain/hubert_base_librispeech.yaml``), whose architecture is
the wav2vec 2.0 Base one (Baevski et al., 2020, Sec. 4.2). The fairseq name of each
hyperparameter is given in the comment beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


def _default_conv_channels() -> list[int]:
    return [512] * 7


def _default_conv_kernels() -> list[int]:
    return [10, 3, 3, 3, 3, 2, 2]


def _default_conv_strides() -> list[int]:
    return [5, 2, 2, 2, 2, 2, 2]


FRONT_ENDS = ("conv", "fbank")
FBANK_NORMALIZATIONS = ("utterance", "global", "none")
FBANK_HOP_MS = 10  # Kaldi filterbank frame shift


@dataclass
class Wav2Vec2Config:
    """wav2vec 2.0 / HuBERT encoder hyperparameters (HuBERT Base by default).

    ``front_end`` picks what feeds the projection: ``"conv"``, the waveform CNN of
    wav2vec 2.0 / HuBERT (the ``conv_*``, ``extractor_mode``, ``masked_group_norm`` and
    ``feature_grad_mult`` fields), or ``"fbank"``, the MelHuBERT (Lin et al., 2022) /
    Fast-HuBERT (Yang et al., 2023) front end: Kaldi log-mel filterbanks (25 ms window,
    10 ms hop, ``n_mels`` wide), normalised, every ``stack_frames`` consecutive frames
    concatenated (2: 20 ms frames at 50 Hz like the CNN's; 4: 40 ms at 25 Hz, Fast-HuBERT),
    then the same layer norm + linear projection. The filterbank front end has no weights.
    """

    family: str = "wav2vec2"
    front_end: str = "conv"  # not in fairseq: "conv" (the CNN) or "fbank"
    # --- filterbank front end (front_end="fbank" only)
    sample_rate: int = 16000  # the waveform's rate (the CNN needs none: its frames are samples)
    n_mels: int = 80  # MelHuBERT / Fast-HuBERT: 80-dim log-mel
    stack_frames: int = 2  # 10 ms frames concatenated per output frame (2: 50 Hz, 4: 25 Hz)
    # running corpus CMVN ("global"), per-utterance CMVN ("utterance") or none. Not "utterance"
    # by default: per-bin per-utterance CMVN zeroes each recording's average spectrum, the cue
    # a pooled speaker probe reads first (a random hubert_mel_small scored 66.8 % speaker ID on
    # the demo with it, 91.9 % with "global"; recipes/hubert_sat/README.md)
    normalization: str = "global"
    # --- convolutional feature extractor (wav2vec 2.0 Sec. 2: 7 blocks, 512 channels,
    # strides (5,2,2,2,2,2,2), kernels (10,3,3,3,3,2,2): 20 ms hop, 25 ms receptive field)
    conv_channels: list[int] = field(default_factory=_default_conv_channels)  # conv_feature_layers
    conv_kernels: list[int] = field(default_factory=_default_conv_kernels)  # conv_feature_layers
    conv_strides: list[int] = field(default_factory=_default_conv_strides)  # conv_feature_layers
    conv_bias: bool = False  # conv_bias (True for Large)
    # "group_norm": one group norm after the first conv (Base); "layer_norm": a layer norm
    # after every conv (Large)
    extractor_mode: str = "group_norm"  # extractor_mode ("default" in fairseq = group_norm)
    # group-norm statistics over valid samples only, so padding does not change outputs;
    # False reproduces fairseq/torchaudio, whose statistics include the padded tail
    masked_group_norm: bool = True
    feature_grad_mult: float = 0.1  # feature_grad_mult (HuBERT / wav2vec 2.0 Base: 0.1)
    # --- projection and Transformer
    embed_dim: int = 768  # encoder_embed_dim
    num_layers: int = 12  # encoder_layers
    num_heads: int = 12  # encoder_attention_heads
    ffn_dim: int = 3072  # encoder_ffn_embed_dim
    pos_conv_kernel: int = 128  # conv_pos
    pos_conv_groups: int = 16  # conv_pos_groups
    layer_norm_first: bool = False  # layer_norm_first (post-LN Base; pre-LN Large)
    dropout_input: float = 0.1  # dropout_input (after the projection)
    dropout: float = 0.1  # dropout
    attention_dropout: float = 0.1  # attention_dropout
    activation_dropout: float = 0.0  # activation_dropout (HuBERT Base: 0.0)
    layer_drop: float = 0.05  # encoder_layerdrop (HuBERT Base: 0.05)
    layer_norm_eps: float = 1e-5

    @property
    def frame_rate(self) -> float:
        """Output frames per second (Hz): 50 for the Base CNN (320-sample stride at 16 kHz)
        and for filterbanks stacked by 2, 25 for stacks of 4."""
        if self.front_end == "fbank":
            return 1000.0 / (FBANK_HOP_MS * self.stack_frames)
        return self.sample_rate / math.prod(self.conv_strides)

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {FRONT_ENDS}, got {self.front_end!r}")
        if self.normalization not in FBANK_NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {FBANK_NORMALIZATIONS}, got {self.normalization!r}"
            )
        if self.stack_frames < 1 or self.n_mels < 1:
            raise ValueError(
                f"stack_frames and n_mels must be >= 1, got {self.stack_frames} and {self.n_mels}"
            )
        if not len(self.conv_channels) == len(self.conv_kernels) == len(self.conv_strides):
            raise ValueError("conv_channels, conv_kernels and conv_strides must have equal length")
        if self.extractor_mode not in ("group_norm", "layer_norm"):
            raise ValueError(
                f"extractor_mode must be 'group_norm' or 'layer_norm', got {self.extractor_mode!r}"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads"
            )
        if self.embed_dim % self.pos_conv_groups:
            raise ValueError("embed_dim must be divisible by pos_conv_groups")


# The Transformer of every waveform family's ``tiny`` test preset (HuBERT, mel HuBERT, WavLM).
TINY_TRANSFORMER = {
    "embed_dim": 64,
    "num_layers": 2,
    "num_heads": 4,
    "ffn_dim": 128,
    "pos_conv_kernel": 16,
    "pos_conv_groups": 4,
}
# The Large shape shared by HuBERT Large (fairseq ``hubert_large_ll60k.yaml``) and WavLM
# Large (torchaudio ``wavlm_large``): 24 pre-LN layers, 1024 wide, 16 heads, FFN 4096 and a
# layer-norm feature extractor with conv bias.
LARGE_SHAPE = {
    "conv_bias": True,
    "extractor_mode": "layer_norm",
    "feature_grad_mult": 1.0,
    "embed_dim": 1024,
    "num_layers": 24,
    "num_heads": 16,
    "ffn_dim": 4096,
    "layer_norm_first": True,
}


def hubert_base() -> Wav2Vec2Config:
    """HuBERT Base (Hsu et al., 2021): 12 layers, 768 wide, 12 heads, FFN 3072, ~95 M
    parameters (the config's defaults)."""
    return Wav2Vec2Config()


def hubert_large() -> Wav2Vec2Config:
    """HuBERT Large (Hsu et al., 2021; fairseq ``hubert_large_ll60k.yaml``): 24 pre-LN
    layers, 1024 wide, 16 heads, FFN 4096, no dropout."""
    no_dropout = {
        name: 0.0
        for name in ("dropout_input", "dropout", "attention_dropout", "activation_dropout")
    }
    return replace(hubert_base(), **LARGE_SHAPE, **no_dropout, layer_drop=0.0)


def hubert_tiny() -> Wav2Vec2Config:
    """HuBERT-architecture encoder sized for CPU tests and debug runs: the Base conv
    arithmetic (320x down-sampling) with 32 channels, a 2-layer 64-wide Transformer."""
    return replace(hubert_base(), conv_channels=[32] * 7, **TINY_TRANSFORMER)


def hubert_mel_base() -> Wav2Vec2Config:
    """MelHuBERT Base (Lin et al., 2022): HuBERT Base's Transformer (12 layers, 768 wide) on
    80 log-mel filterbanks stacked to 50 Hz instead of the waveform CNN."""
    return replace(hubert_base(), front_end="fbank")


def hubert_mel_tiny() -> Wav2Vec2Config:
    """:func:`hubert_tiny`'s Transformer on 80 log-mel filterbanks stacked to 50 Hz
    (MelHuBERT style), sized for CPU tests and debug runs."""
    return replace(hubert_mel_base(), **TINY_TRANSFORMER)


def hubert_mel_small() -> Wav2Vec2Config:
    """A CPU-trainable mel-input HuBERT: 6 post-LN layers, 256 wide, 4 heads, FFN 1024
    (~5 M parameters), 80 log-mel stacked to 50 Hz (``stack_frames=4``: 25 Hz, Fast-HuBERT
    style). Between MelHuBERT's Base and the tiny test model: the encoder of
    ``experiment=hubert_sat_small`` on 2 CPU cores, where the waveform CNN of a HuBERT this
    wide would cost more than the Transformer (benchmarks/README.md, front-end FLOPs)."""
    return replace(
        hubert_mel_base(),
        embed_dim=256,
        num_layers=6,
        num_heads=4,
        ffn_dim=1024,
        pos_conv_kernel=64,
        pos_conv_groups=16,
        layer_drop=0.0,
    )


def wav2vec2_base() -> Wav2Vec2Config:
    """wav2vec 2.0 Base (Baevski et al., 2020; fairseq ``wav2vec2_base_librispeech.yaml``):
    HuBERT Base's encoder, no activation dropout, layer drop 0.05."""
    return replace(hubert_base(), activation_dropout=0.0, layer_drop=0.05)


PRESETS = {"tiny": hubert_tiny, "base": hubert_base, "large": hubert_large}
# the filterbank-input variants (``hubert_mel_<size>`` in :data:`speechssl.encoders.PRESETS`)
MEL_PRESETS = {"tiny": hubert_mel_tiny, "small": hubert_mel_small, "base": hubert_mel_base}
