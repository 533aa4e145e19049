"""Transformer layers shared by the encoder families.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` with a boolean
mask, so a GPU picks the flash / memory-efficient kernels and a CPU its fused kernel.
Parameter names follow torchaudio's wav2vec 2.0 components (``q_proj``, ``feed_forward.
intermediate_dense``, ...) so the key-mapping tables of :mod:`speechssl.encoders.wav2vec2.convert` stay short.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, F, D) with an SDPA mask.

    Example:
        >>> attention = SelfAttention(embed_dim=8, num_heads=2)
        >>> attention(torch.randn(3, 5, 8)).shape
        torch.Size([3, 5, 8])
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self, x: Tensor, attention_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """x (B, F, D); attention_mask bool (B, 1, 1 or F, F), True = may attend."""
        batch_size, num_frames, _ = x.shape
        # (B, F, D) -> (B, F, H, Dh) -> (B, H, F, Dh)
        shape = (batch_size, num_frames, self.num_heads, self.head_dim)
        query = self.q_proj(x).view(shape).transpose(1, 2)
        key = self.k_proj(x).view(shape).transpose(1, 2)
        value = self.v_proj(x).view(shape).transpose(1, 2)
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and attention_mask is None,
        )
        # (B, H, F, Dh) -> (B, F, H, Dh) -> (B, F, D)
        attended = attended.transpose(1, 2).reshape(batch_size, num_frames, self.embed_dim)
        return self.out_proj(attended)


class FeedForward(nn.Module):
    """Position-wise feed-forward block: Linear -> GELU -> dropout -> Linear -> dropout."""

    def __init__(
        self, embed_dim: int, ffn_dim: int, activation_dropout: float, dropout: float
    ) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class TransformerLayer(nn.Module):
    """One Transformer layer, post-LN (BERT / wav2vec 2.0 Base) or pre-LN (Large).

    post-LN: ``x = LN(x + Drop(Attn(x)));  x = LN(x + FFN(x))``
    pre-LN:  ``x = x + Drop(Attn(LN(x)));  x = x + FFN(LN(x))``
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        layer_norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = SelfAttention(embed_dim, num_heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.feed_forward = FeedForward(embed_dim, ffn_dim, activation_dropout, dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def forward(
        self, x: Tensor, attention_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """x (B, F, D) -> (B, F, D)."""
        if self.layer_norm_first:
            x = x + self.dropout(self.attention(self.layer_norm(x), attention_mask, is_causal))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, attention_mask, is_causal)))
        return self.final_layer_norm(x + self.feed_forward(x))


class TransformerStack(nn.Module):
    """A stack of ``TransformerLayer`` with layer drop, collecting every hidden state.

    ``hidden_states[0]`` is the stack's input, ``hidden_states[i]`` the output of layer i;
    with pre-LN layers the final layer norm (``final_layer_norm=True``) is applied to the
    last entry, as Hugging Face does. Padded frames of every returned state are zero.
    """

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        attention_dropout: float,
        activation_dropout: float,
        layer_norm_first: bool,
        layer_drop: float = 0.0,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layer_drop = layer_drop
        self.layers = nn.ModuleList(
            TransformerLayer(
                embed_dim,
                num_heads,
                ffn_dim,
                dropout,
                attention_dropout,
                activation_dropout,
                layer_norm_first,
                layer_norm_eps,
            )
            for _ in range(num_layers)
        )

    @classmethod
    def from_config(cls, config) -> TransformerStack:
        """Build from an encoder config with the usual field names.

        Reads ``num_layers``, ``embed_dim``, ``num_heads``, ``ffn_dim``, ``dropout``,
        ``attention_dropout``, ``activation_dropout``, ``layer_norm_first`` and, where the
        config has them, ``layer_drop`` (default 0) and ``layer_norm_eps`` (default 1e-5).
        """
        return cls(
            num_layers=config.num_layers,
            embed_dim=config.embed_dim,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout,
            layer_norm_first=config.layer_norm_first,
            layer_drop=getattr(config, "layer_drop", 0.0),
            layer_norm_eps=getattr(config, "layer_norm_eps", 1e-5),
        )

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor,
        attention_mask: Tensor | None,
        final_layer_norm: nn.Module | None = None,
        output_layer: int | None = None,
        is_causal: bool = False,
    ) -> tuple[Tensor, ...]:
        """x (B, F, D), padding_mask (B, F) True on padding -> tuple of (B, F, D)."""
        last = len(self.layers) if output_layer is None else output_layer
        if not 0 <= last <= len(self.layers):
            raise ValueError(f"output_layer must lie in [0, {len(self.layers)}], got {last}")
        hidden_states = [x.masked_fill(padding_mask[..., None], 0.0)]
        for index, layer in enumerate(self.layers[:last]):
            # layer drop (Fan et al., 2019): skip a whole layer in training; the skipped
            # layer's "output" is its input so hidden_states keeps one entry per layer
            if not (self.training and self.layer_drop > 0 and torch.rand(()) < self.layer_drop):
                x = layer(x, attention_mask, is_causal)
            if final_layer_norm is not None and index == len(self.layers) - 1:
                x = final_layer_norm(x)
            hidden_states.append(x.masked_fill(padding_mask[..., None], 0.0))
        return tuple(hidden_states)


def sinusoidal_positions(num_frames: int, dim: int, device=None, dtype=None) -> Tensor:
    """(F, dim) sinusoidal position table of Vaswani et al. (2017), Sec. 3.5."""
    position = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    table = torch.zeros(num_frames, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table if dtype is None else table.to(dtype)
