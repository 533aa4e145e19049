"""Causal encoders for predictive coding: a causal Transformer and APC's GRU stack.

Both are causal in their features: the output at frame t depends on frames <= t only
(``forward_features``), so an objective can train them to predict frame t + n.

Example:
    >>> import torch
    >>> from speechssl.encoders.predictive import CausalTransformerEncoder, tpc_tiny
    >>> encoder = CausalTransformerEncoder(tpc_tiny()).eval()
    >>> feats, lengths = encoder.features(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> out = encoder.forward_features(feats, lengths)
    >>> out.last_hidden_state.shape, out.lengths.tolist()
    (torch.Size([2, 98, 64]), [98, 48])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import (
    EncoderOutput,
    attention_mask_from_padding,
    lengths_to_padding_mask,
)
from ..frontend import FbankEncoder
from ..transformer import TransformerStack, sinusoidal_positions
from .config import APCConfig, CausalTransformerConfig


class CausalTransformerEncoder(FbankEncoder):
    """Transformer predictive coding encoder: log-mel -> projection + positions -> causal
    pre-LN Transformer (causal mask and key-padding mask) -> final layer norm."""

    family = "predictive_transformer"

    def __init__(self, config: CausalTransformerConfig | None = None):
        config = config if config is not None else CausalTransformerConfig()
        super().__init__(config)
        self._build_front_end(config)
        self.input_projection = nn.Linear(config.n_mels, config.embed_dim)
        if config.positions == "learned":
            self.position_embedding = nn.Embedding(config.max_positions, config.embed_dim)
        else:
            self.position_embedding = None
        self.dropout = nn.Dropout(config.dropout)
        self.transformer = TransformerStack.from_config(config)
        self.final_layer_norm = nn.LayerNorm(config.embed_dim) if config.layer_norm_first else None

    def _positions(self, num_frames: int, x: Tensor) -> Tensor:
        if self.position_embedding is None:
            return sinusoidal_positions(num_frames, self.config.embed_dim, x.device, x.dtype)
        if num_frames > self.config.max_positions:
            raise ValueError(
                f"{num_frames} frames exceed the learned position table ({self.config.max_positions})"
            )
        return self.position_embedding.weight[:num_frames].to(x.dtype)

    def forward_features(self, feats: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Log-mel (B, F, n_mels) -> EncoderOutput (B, F, D); output t sees frames <= t."""
        lengths = self._check_features(feats, lengths)
        num_frames = feats.shape[1]
        x = self.input_projection(feats) * math.sqrt(self.config.embed_dim)
        if num_frames == 0:
            return EncoderOutput(x, (x,) * (self.num_layers + 1), lengths)
        x = self.dropout(x + self._positions(num_frames, x))
        padding_mask = lengths_to_padding_mask(lengths, num_frames)
        causal = torch.ones(num_frames, num_frames, dtype=torch.bool, device=x.device).tril()
        # (B, 1, 1, F) key mask & (F, F) causal mask -> (B, 1, F, F)
        attention_mask = attention_mask_from_padding(padding_mask) & causal
        hidden_states = self.transformer(
            x, padding_mask, attention_mask, final_layer_norm=self.final_layer_norm
        )
        return EncoderOutput(hidden_states[-1], hidden_states, lengths)


class APCEncoder(FbankEncoder):
    """APC's unidirectional GRU stack with residual connections between layers.

    ``hidden_states[0]`` carries the input features in its first ``n_mels`` channels and
    zeros in the rest, so every state is (B, F, hidden_size) and a weighted layer sum works.
    Padding needs no packing: a unidirectional GRU's valid steps never see later frames.
    """

    family = "apc"

    def __init__(self, config: APCConfig | None = None):
        config = config if config is not None else APCConfig()
        super().__init__(config)
        if config.n_mels > config.hidden_size:
            raise ValueError("APC needs hidden_size >= n_mels (hidden_states[0] holds the input)")
        self._build_front_end(config)
        sizes = [config.n_mels] + [config.hidden_size] * config.num_layers
        self.layers = nn.ModuleList(
            nn.GRU(sizes[index], config.hidden_size, batch_first=True)
            for index in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)

    @property
    def output_dim(self) -> int:
        return self.config.hidden_size

    def forward_features(self, feats: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """Log-mel (B, F, n_mels) -> EncoderOutput (B, F, hidden_size); output t sees <= t."""
        lengths = self._check_features(feats, lengths)
        padding_mask = lengths_to_padding_mask(lengths, feats.shape[1])[..., None]  # (B, F, 1)
        first = F.pad(feats, (0, self.config.hidden_size - self.config.n_mels))
        hidden_states = [first.masked_fill(padding_mask, 0.0)]
        if feats.shape[1] == 0:
            return EncoderOutput(first, tuple(hidden_states * (self.num_layers + 1)), lengths)
        x = feats
        for index, layer in enumerate(self.layers):
            output, _ = layer(x)
            # s3prl's APC order: dropout between layers (not after the last), then the
            # residual from the layer's input (not for the first layer: 80 -> 512)
            if index < len(self.layers) - 1:
                output = self.dropout(output)
            if self.config.residual and index > 0:
                output = output + x
            hidden_states.append(output.masked_fill(padding_mask, 0.0))
            x = output
        return EncoderOutput(hidden_states[-1], tuple(hidden_states), lengths)
