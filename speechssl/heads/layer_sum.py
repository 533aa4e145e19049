"""Learned softmax-weighted sum of an encoder's hidden states (SUPERB's "featurizer").

SUPERB (Yang et al., 2021) freezes the upstream and trains one scalar per layer: the
downstream head sees ``sum_l softmax(w)_l * h_l``. The weights start equal (``w = 0``), so
at step 0 the head sees the plain layer average; after training :meth:`WeightedLayerSum.weights`
shows which layers a task uses.

Example:
    >>> import torch
    >>> layer_sum = WeightedLayerSum(num_layers=3)
    >>> hidden_states = [torch.full((2, 5, 4), float(value)) for value in (0, 3, 6)]
    >>> layer_sum(hidden_states)[0, 0].tolist()
    [3.0, 3.0, 3.0, 3.0]
    >>> layer_sum.weights()
    tensor([0.3333, 0.3333, 0.3333])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WeightedLayerSum", "mix_layers"]


class WeightedLayerSum(nn.Module):
    """Softmax-normalised learned weights over ``num_layers`` hidden states.

    Args:
        num_layers: how many hidden states the encoder returns (``encoder.num_layers + 1``
            for an encoder whose ``hidden_states[0]`` is the input to its first layer).
        layer_norm: normalise each hidden state over its feature dim (no learned affine)
            before mixing, as s3prl's featurizer does, so layers of very different scale
            compete on their content rather than their norm.

    Shapes:
        ``forward(hidden_states: sequence of num_layers (B, F, D)) -> (B, F, D)``.
    """

    def __init__(self, num_layers: int, layer_norm: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        # zeros -> softmax gives 1 / num_layers each: every layer starts equal
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        """The current mixing weights ``(num_layers,)`` (sum to 1), detached, on the CPU."""
        return F.softmax(self.logits.detach().float(), dim=0).cpu()

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(hidden_states, torch.Tensor) or len(hidden_states) != self.num_layers:
            got = (
                "a single tensor" if isinstance(hidden_states, torch.Tensor) else len(hidden_states)
            )
            raise ValueError(f"expected {self.num_layers} hidden states, got {got}")
        # symbolic shapes (torch.export) cannot be hashed; torch.stack checks them there
        if not torch.compiler.is_compiling():
            shapes = {tuple(state.shape) for state in hidden_states}
            if len(shapes) != 1:
                raise ValueError(
                    f"hidden states must share one (B, F, D) shape, got {sorted(shapes)}"
                )
        # L x (B, F, D) -> (L, B, F, D)
        stacked = torch.stack(list(hidden_states), dim=0)
        if self.layer_norm:
            stacked = F.layer_norm(stacked, stacked.shape[-1:])
        weights = F.softmax(self.logits, dim=0).to(stacked.dtype)
        # (L,) -> (L, 1, 1, 1) so it broadcasts over (L, B, F, D); sum over L -> (B, F, D)
        return (weights.view(-1, 1, 1, 1) * stacked).sum(dim=0)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, layer_norm={self.layer_norm}"


def mix_layers(
    layer_sum: WeightedLayerSum | None, hidden_states: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """The frames a head reads: the weighted layer sum, or the one tensor it was given.

    A head built with ``num_layers=None`` has no layer sum and takes a single ``(B, F, D)``
    tensor (or a one-element sequence, as :class:`~speechssl.heads.FbankUpstream` returns).
    """
    if layer_sum is not None:
        return layer_sum(hidden_states)
    if isinstance(hidden_states, torch.Tensor):
        return hidden_states
    if len(hidden_states) != 1:
        raise ValueError(
            f"this head has no layer sum (num_layers=None) but got {len(hidden_states)} hidden "
            "states: build it with num_layers=len(hidden_states)"
        )
    return hidden_states[0]
