"""Filterbank Conformer encoder built on ``torchaudio.models.Conformer``'s layers.

torchaudio's ``ConformerLayer.forward`` lets padded frames leak into valid ones through
the depthwise convolution and uses ``nn.MultiheadAttention``; this module keeps
torchaudio's parameters (so its weights load) but runs each layer itself: attention through
SDPA with a key-padding mask, and padded frames zeroed right before the depthwise
convolution, so a padded batch gives the same outputs as its utterances one by one.

Example:
    >>> import torch
    >>> from speechssl.encoders.conformer import ConformerEncoder, conformer_tiny
    >>> encoder = ConformerEncoder(conformer_tiny()).eval()
    >>> out = encoder(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> out.last_hidden_state.shape, out.lengths.tolist()
    (torch.Size([2, 23, 64]), [23, 11])
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchaudio.models import Conformer

from ..base import (
    EncoderOutput,
    attention_mask_from_padding,
    lengths_to_padding_mask,
)
from ..frontend import Conv2dSubsampling, FbankEncoder
from .config import ConformerConfig


def _attention(layer_attention: nn.MultiheadAttention, x: Tensor, attention_mask: Tensor) -> Tensor:
    """SDPA with ``nn.MultiheadAttention``'s packed weights; x (B, F, D) -> (B, F, D)."""
    batch_size, num_frames, embed_dim = x.shape
    num_heads = layer_attention.num_heads
    qkv = F.linear(x, layer_attention.in_proj_weight, layer_attention.in_proj_bias)
    # (B, F, 3D) -> (B, F, 3, H, Dh) -> (3, B, H, F, Dh)
    qkv = qkv.view(batch_size, num_frames, 3, num_heads, embed_dim // num_heads)
    query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    dropout = layer_attention.dropout if layer_attention.training else 0.0
    attended = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout
    )
    # (B, H, F, Dh) -> (B, F, H, Dh) -> (B, F, D)
    attended = attended.transpose(1, 2).reshape(batch_size, num_frames, embed_dim)
    return layer_attention.out_proj(attended)


def _convolution(module: nn.Module, x: Tensor, padding_mask: Tensor) -> Tensor:
    """torchaudio's ConvolutionModule with padding zeroed before the depthwise conv."""
    x = module.layer_norm(x).transpose(1, 2)  # (B, F, D) -> (B, D, F)
    pointwise, glu, depthwise, *rest = module.sequential
    x = glu(pointwise(x))
    x = x.masked_fill(padding_mask[:, None, :], 0.0)
    x = depthwise(x)
    for layer in rest:
        x = layer(x)
    return x.transpose(1, 2)  # (B, D, F) -> (B, F, D)


def conformer_layer(
    layer: nn.Module, x: Tensor, padding_mask: Tensor, attention_mask: Tensor
) -> Tensor:
    """One torchaudio ``ConformerLayer`` on batch-first x (B, F, D), padding-safe."""
    x = x + 0.5 * layer.ffn1(x)
    if layer.convolution_first:
        x = x + _convolution(layer.conv_module, x, padding_mask)
    x = x + layer.self_attn_dropout(
        _attention(layer.self_attn, layer.self_attn_layer_norm(x), attention_mask)
    )
    if not layer.convolution_first:
        x = x + _convolution(layer.conv_module, x, padding_mask)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


class ConformerEncoder(FbankEncoder):
    """``forward(wav (B, T), lengths (B,)) -> EncoderOutput`` over 40 ms frames."""

    family = "conformer"

    def __init__(self, config: ConformerConfig | None = None):
        config = config if config is not None else ConformerConfig()
        super().__init__(config)
        self._build_front_end(config)
        self.subsampling = Conv2dSubsampling(config.n_mels, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.conformer = Conformer(
            input_dim=config.embed_dim,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            num_layers=config.num_layers,
            depthwise_conv_kernel_size=config.depthwise_conv_kernel_size,
            dropout=config.dropout,
            convolution_first=config.convolution_first,
        )

    def forward_features(self, feats: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Log-mel (B, F, n_mels) -> EncoderOutput over subsampled frames (B, F', D)."""
        lengths = self._check_features(feats, lengths)
        x, lengths = self.subsampling(feats, lengths)
        num_frames = x.shape[1]
        if num_frames == 0:
            return EncoderOutput(x, (x,) * (self.num_layers + 1), lengths)
        padding_mask = lengths_to_padding_mask(lengths, num_frames)
        attention_mask = attention_mask_from_padding(padding_mask)
        x = self.dropout(x)
        hidden_states = [x.masked_fill(padding_mask[..., None], 0.0)]
        for layer in self.conformer.conformer_layers:
            x = conformer_layer(layer, x, padding_mask, attention_mask)
            hidden_states.append(x.masked_fill(padding_mask[..., None], 0.0))
        return EncoderOutput(hidden_states[-1], tuple(hidden_states), lengths)
