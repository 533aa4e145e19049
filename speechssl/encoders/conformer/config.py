"""Configuration of the filterbank Conformer encoder.

Defaults are Conformer (S) of Gulati et al. (2020), "Conformer: Convolution-augmented
Transformer for Speech Recognition", Table 1: 16 layers, d=144, 4 heads, FFN 4x = 576,
depthwise kernel 32 (31 here: torchaudio's centred depthwise conv needs an odd
kernel, as in ESPnet), dropout 0.1, on 80-dim fbank with 4x
Conv2d subsampling. Large (L): 17 layers, d=512, 8 heads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class ConformerConfig:
    """Filterbank -> Conv2d subsampling -> Conformer (torchaudio.models.Conformer) layers."""

    family: str = "conformer"
    n_mels: int = 80
    sample_rate: int = 16000
    normalization: str = "utterance"  # "utterance" | "global" | "none"
    kaldi_compatible: bool = True
    embed_dim: int = 144  # encoder_dim
    num_layers: int = 16  # num_encoder_layers
    num_heads: int = 4  # num_attention_heads
    ffn_dim: int = 576  # 4 * encoder_dim
    depthwise_conv_kernel_size: int = 31  # odd, so the convolution is centred (torchaudio needs it)
    dropout: float = 0.1
    convolution_first: bool = False

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads"
            )
        if self.depthwise_conv_kernel_size % 2 == 0:
            raise ValueError("depthwise_conv_kernel_size must be odd")


def conformer_base() -> ConformerConfig:
    """Conformer (S) (Gulati et al., 2020; the config's defaults)."""
    return ConformerConfig()


def conformer_tiny() -> ConformerConfig:
    """Filterbank Conformer sized for CPU tests: 2 layers, 64 wide, 40 log-mel."""
    return replace(
        conformer_base(),
        n_mels=40,
        embed_dim=64,
        num_layers=2,
        num_heads=4,
        ffn_dim=128,
        depthwise_conv_kernel_size=7,
    )


def conformer_large() -> ConformerConfig:
    """Conformer (L): 17 layers, 512 wide, 8 heads, FFN 2048."""
    return replace(conformer_base(), embed_dim=512, num_layers=17, num_heads=8, ffn_dim=2048)


PRESETS = {"tiny": conformer_tiny, "base": conformer_base, "large": conformer_large}
