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
    Encoder,
    EncoderOutput,
    attention_mask_from_padding,
    check_lengths,
    check_waveform_batch,
    lengths_to_padding_mask,
)
from ..frontend import Conv2dSubsampling, FbankFrontEnd
from ..transformer import TransformerStack, sinusoidal_positions
from .config import FbankTransformerConfig


class FbankTransformerEncoder(Encoder):
    """``forward(wav (B, T), lengths (B,)) -> EncoderOutput`` with 40 ms frames (4x10 ms)."""

    family = "fbank_transformer"

    def __init__(self, config: FbankTransformerConfig | None = None):
        config = config if config is not None else FbankTransformerConfig()
        super().__init__(config)
        self.front_end = FbankFrontEnd(
            config.n_mels, config.sample_rate, config.normalization, config.kaldi_compatible
        )
        self.subsampling = Conv2dSubsampling(config.n_mels, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.transformer = TransformerStack(
            num_layers=config.num_layers,
            embed_dim=config.embed_dim,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout,
            layer_norm_first=config.layer_norm_first,
            layer_drop=config.layer_drop,
        )
        # pre-LN stacks end with a layer norm (post-LN layers already end normalised)
        self.final_layer_norm = nn.LayerNorm(config.embed_dim) if config.layer_norm_first else None

    @property
    def output_dim(self) -> int:
        return self.config.embed_dim

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def features(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav (B, T) -> normalised log-mel (B, F, n_mels) and frame lengths (B,)."""
        lengths = check_waveform_batch(wav, lengths)
        return self.front_end(wav, lengths)

    def forward_features(self, feats: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Log-mel (B, F, n_mels) -> EncoderOutput over subsampled frames (B, F', D)."""
        if feats.ndim != 3 or feats.shape[2] != self.config.n_mels:
            raise ValueError(
                f"expected features (B, F, {self.config.n_mels}), got {tuple(feats.shape)}"
            )
        lengths = check_lengths(lengths, feats.shape[0], feats.shape[1], feats.device)
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

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        feats, feat_lengths = self.features(wav, lengths)
        return self.forward_features(feats, feat_lengths)
