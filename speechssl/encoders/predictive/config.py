"""Configurations of the predictive-coding encoders.

- ``CausalTransformerConfig``: Transformer predictive coding (Lian et al., 2018): a
  Transformer whose self-attention only looks at past frames, over 80-dim log-mel
  filterbanks, pre-trained to predict future frames. Widths follow the Transformer base of
  Vaswani et al. (2017) at half depth (d=512, 8 heads, FFN 2048, 6 layers).
- ``APCConfig``: Autoregressive Predictive Coding (Chung et al., 2019, "An Unsupervised
  Autoregressive Model for Speech Representation Learning", Sec. 2-3): 3 unidirectional
  GRU layers of 512 units with residual connections between layers, on 80-dim log-mel
  (s3prl's ``apc`` defaults: rnn_num_layers=3, rnn_hidden_size=512, rnn_dropout=0.1,
  rnn_residual=True).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class CausalTransformerConfig:
    """Causal Transformer over filterbanks (no subsampling: one state per 10 ms frame)."""

    family: str = "predictive_transformer"
    n_mels: int = 80
    sample_rate: int = 16000
    normalization: str = "utterance"  # "utterance" | "global" | "none" (CMVN of the front end)
    kaldi_compatible: bool = True
    embed_dim: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    positions: str = "sinusoidal"  # "sinusoidal" | "learned"
    max_positions: int = 4096  # frames (41 s) a learned position table covers
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    layer_norm_first: bool = True

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads"
            )
        if self.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', got {self.positions!r}")


@dataclass
class APCConfig:
    """APC's residual GRU stack."""

    family: str = "apc"
    n_mels: int = 80  # s3prl apc: input_size 80
    sample_rate: int = 16000
    normalization: str = "utterance"
    kaldi_compatible: bool = True
    hidden_size: int = 512  # rnn_hidden_size
    num_layers: int = 3  # rnn_num_layers
    dropout: float = 0.1  # rnn_dropout, between layers
    residual: bool = True  # rnn_residual


def tpc_base() -> CausalTransformerConfig:
    """Causal Transformer predictive coding encoder (Lian et al., 2018): 6 layers, 512 wide,
    8 heads, FFN 2048 on 80 log-mel (the config's defaults)."""
    return CausalTransformerConfig()


def tpc_tiny() -> CausalTransformerConfig:
    """Causal Transformer sized for CPU tests and debug runs: 2 layers, 64 wide, 40 log-mel."""
    return replace(tpc_base(), n_mels=40, embed_dim=64, num_layers=2, num_heads=4, ffn_dim=128)


def tpc_small() -> CausalTransformerConfig:
    """Causal Transformer that learns on 2 CPU cores (``experiment=tpc_small``): 4 layers,
    256 wide, 4 heads, FFN 1024, 40 log-mel."""
    return replace(tpc_base(), n_mels=40, embed_dim=256, num_layers=4, num_heads=4, ffn_dim=1024)


def tpc_large() -> CausalTransformerConfig:
    """BERT-base width: 12 layers, 768 wide, 12 heads, FFN 3072."""
    return replace(tpc_base(), embed_dim=768, num_layers=12, num_heads=12, ffn_dim=3072)


def apc_base() -> APCConfig:
    """APC (Chung et al., 2019): 3 residual GRU layers of 512 units on 80-dim log-mel (the
    config's defaults)."""
    return APCConfig()


def apc_tiny() -> APCConfig:
    """APC sized for CPU tests: 2 GRU layers of 64 units on 40 log-mel."""
    return replace(apc_base(), n_mels=40, hidden_size=64, num_layers=2)


def apc_large() -> APCConfig:
    """Chung et al. (2019) also report 4-layer, 512-unit stacks; here 4 x 1024."""
    return replace(apc_base(), hidden_size=1024, num_layers=4)


PRESETS = {"tiny": tpc_tiny, "small": tpc_small, "base": tpc_base, "large": tpc_large}
APC_PRESETS = {"tiny": apc_tiny, "base": apc_base, "large": apc_large}
