"""Utterance-level classifier: (weighted layer sum) -> projector -> pooling -> linear.

This is SUPERB's emotion-recognition downstream (Yang et al., 2021): a frame-wise linear
projector to ``projector_dim``, mean pooling over the valid frames, and a linear layer to
the classes. ``pooling="attentive"`` swaps in attentive statistics pooling.

Example:
    >>> import torch
    >>> head = UtteranceClassifier(input_dim=8, num_classes=4, projector_dim=16, num_layers=3)
    >>> hidden_states = [torch.randn(2, 10, 8) for _ in range(3)]
    >>> head(hidden_states, torch.tensor([10, 6])).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from speechssl.heads.layer_sum import WeightedLayerSum, mix_layers
from speechssl.heads.pooling import AttentiveStatisticsPooling, MaskedMeanPooling

__all__ = ["POOLINGS", "UtteranceClassifier"]

POOLINGS = ("mean", "attentive")


class UtteranceClassifier(nn.Module):
    """Classify an utterance from its frames.

    Args:
        input_dim: feature size ``D`` of the encoder's hidden states.
        num_classes: number of output classes.
        projector_dim: size of the frame-wise projection (SUPERB: 256).
        pooling: ``"mean"`` (masked mean) or ``"attentive"`` (attentive mean + std).
        num_layers: number of hidden states to mix with a :class:`WeightedLayerSum`;
            ``None`` takes one ``(B, F, D)`` tensor directly.
        layer_norm: layer-normalise each hidden state before mixing.
        dropout: dropout on the pooled vector.
        attention_dim: hidden size of the attentive pooling scorer.

    Shapes:
        ``forward(hidden_states (B, F, D) or L x (B, F, D), lengths (B,)) -> logits (B, C)``.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        projector_dim: int = 256,
        pooling: str = "mean",
        num_layers: int | None = None,
        layer_norm: bool = False,
        dropout: float = 0.0,
        attention_dim: int = 128,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.layer_sum = None if num_layers is None else WeightedLayerSum(num_layers, layer_norm)
        self.projector = nn.Linear(input_dim, projector_dim)
        if pooling == "mean":
            self.pooling = MaskedMeanPooling()
        else:
            self.pooling = AttentiveStatisticsPooling(projector_dim, attention_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(projector_dim * self.pooling.output_multiplier, num_classes)

    def layer_weights(self) -> torch.Tensor | None:
        """Weights of the layer sum ``(L,)``, or ``None`` without one."""
        return None if self.layer_sum is None else self.layer_sum.weights()

    def forward(
        self, hidden_states: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor
    ) -> torch.Tensor:
        frames = mix_layers(self.layer_sum, hidden_states)
        # (B, F, D) -> (B, F, projector_dim), frame by frame
        projected = self.projector(frames)
        pooled = self.pooling(projected, lengths)
        return self.output(self.dropout(pooled))
