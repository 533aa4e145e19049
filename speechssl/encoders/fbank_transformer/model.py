"""Filterbank Transformer encoder: fbank -> Conv2d 4x subsampling -> Transformer.

Example:
    >>> import torch
    >>> from speechssl.encoders.fbank_transformer import FbankTransformerEncoder
    >>> from speechssl.encoders.fbank_transformer import fbank_transformer_tiny
    >>> encoder = FbankTransformerEncoder(fbank_transformer_tiny()).eval()
    >>> out = encoder(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> out.last_hidden_state.shape, out.lengths.tolist()
    (torch.Size([2, 23, 64]), [23, 11])
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..base import (
    EncoderOutput,
    attention_mask_from_padding,
    lengths_to_padding_mask,
)
from ..frontend import Conv2dSubsampling, FbankEncoder
from ..transformer import TransformerStack, sinusoidal_positions
from .config import FbankTransformerConfig


class FbankTransformerEncoder(FbankEncoder):
    """``forward(wav (B, T), lengths (B,)) -> EncoderOutput`` with 40 ms frames (4x10 ms)."""

    family = "fbank_transformer"

    def __init__(self, config: FbankTransformerConfig | None = None):
        config = config if config is not None else FbankTransformerConfig()
        super().__init__(config)
        self._build_front_end(config)
        self.subsampling = Conv2dSubsampling(config.n_mels, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.transformer = TransformerStack.from_config(config)
        # pre-LN stacks end with a layer norm (post-LN layers already end normalised)
        self.final_layer_norm = nn.LayerNorm(config.embed_dim) if config.layer_norm_first else None

    def forward_features(self, feats: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Log-mel (B, F, n_mels) -> EncoderOutput over subsampled frames (B, F', D)."""
        lengths = self._check_features(feats, lengths)
        x, lengths = self.subsampling(feats, lengths)
        num_frames = x.shape[1]
        padding_mask = lengths_to_padding_mask(lengths, num_frames)
        if num_frames == 0:
            return EncoderOutput(x, (x,) * (self.num_layers + 1), lengths)
        # scaled input plus absolute sinusoidal positions (Vaswani et al., 2017, Sec. 3.4-3.5)
        x = x * math.sqrt(self.config.embed_dim)
        x = x + sinusoidal_positions(num_frames, self.config.embed_dim, x.device, x.dtype)
        x = self.dropout(x)
        hidden_states = self.transformer(
            x,
            padding_mask,
            attention_mask_from_padding(padding_mask),
            final_layer_norm=self.final_layer_norm,
        )
        return EncoderOutput(hidden_states[-1], hidden_states, lengths)
