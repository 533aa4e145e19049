"""Configuration of the filterbank Transformer encoder.

Defaults follow the ESPnet speech Transformer encoder of Karita et al. (2019), "A
Comparative Study on Transformer vs RNN in Speech Applications", Sec. 2 and Table 1
(80-dim fbank, 2-layer Conv2d 4x subsampling, 12 pre-LN layers, d=256, 4 heads, FFN 2048,
dropout 0.1). fairseq's ``speech_to_text`` names are given where they exist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class FbankTransformerConfig:
    """Filterbank -> Conv2d subsampling -> Transformer encoder hyperparameters."""

    family: str = "fbank_transformer"
    n_mels: int = 80  # input_feat_per_channel
    sample_rate: int = 16000
    normalization: str = "utterance"  # "utterance" | "global" | "none" (CMVN of the front end)
    kaldi_compatible: bool = True  # Kaldi fbank (torchaudio.compliance.kaldi) numbers
    embed_dim: int = 256  # encoder_embed_dim
    num_layers: int = 12  # encoder_layers
    num_heads: int = 4  # encoder_attention_heads
    ffn_dim: int = 2048  # encoder_ffn_embed_dim
    layer_norm_first: bool = True  # encoder_normalize_before
    dropout: float = 0.1  # dropout
    attention_dropout: float = 0.0  # attention_dropout
    activation_dropout: float = 0.0  # activation_dropout
    layer_drop: float = 0.0  # encoder_layerdrop

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads"
            )


def fbank_transformer_base() -> FbankTransformerConfig:
    """Karita et al. (2019) encoder: 12 layers, 256 wide, 4 heads, FFN 2048 (the config's
    defaults)."""
    return FbankTransformerConfig()


def fbank_transformer_tiny() -> FbankTransformerConfig:
    """Filterbank Transformer sized for CPU tests and debug runs: 2 layers, 64 wide, 40 log-mel."""
    return replace(
        fbank_transformer_base(), n_mels=40, embed_dim=64, num_layers=2, num_heads=4, ffn_dim=128
    )


def fbank_transformer_large() -> FbankTransformerConfig:
    """ESPnet's large LibriSpeech encoder: 12 layers, 512 wide, 8 heads, FFN 2048."""
    return replace(fbank_transformer_base(), embed_dim=512, num_heads=8, ffn_dim=2048)


PRESETS = {
    "tiny": fbank_transformer_tiny,
    "base": fbank_transformer_base,
    "large": fbank_transformer_large,
}
