"""Length-aware pooling of frame sequences ``(B, F, D)`` into utterance vectors.

Padding never enters the pooled vector: frames at or beyond each row's length are masked
out of every sum, so changing padded values leaves the output unchanged.

Example:
    >>> import torch
    >>> frames = torch.tensor([[[1.0], [3.0], [100.0]]])  # third frame is padding
    >>> MaskedMeanPooling()(frames, torch.tensor([2]))
    tensor([[2.]])
"""

from __future__ import annotations

import torch
from torch import nn

from speechssl.features.framing import lengths_to_mask

__all__ = [
    "AttentiveStatisticsPooling",
    "MaskedMeanPooling",
    "check_frames",
    "pool_hidden_states",
]


def check_frames(frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Validate ``(frames (B, F, D), lengths (B,))``; return ``lengths`` as int64 on the device."""
    if not isinstance(frames, torch.Tensor) or frames.dim() != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a (B, F, D) tensor, got {shape}")
    lengths = torch.as_tensor(lengths, device=frames.device)
    if lengths.dim() != 1 or lengths.size(0) != frames.size(0):
        raise ValueError(f"lengths must have shape ({frames.size(0)},), got {tuple(lengths.shape)}")
    lengths = lengths.long()
    # data-dependent: skipped while a graph is captured (torch.compile, torch.export)
    checked = lengths.numel() and not torch.compiler.is_compiling()
    if checked and (int(lengths.min()) < 1 or int(lengths.max()) > frames.size(1)):
        raise ValueError(
            f"frame lengths must lie in [1, {frames.size(1)}], "
            f"got [{int(lengths.min())}, {int(lengths.max())}]"
        )
    return lengths


def pool_hidden_states(hidden_states, lengths: torch.Tensor) -> torch.Tensor:
    """Mean and std over valid frames of each hidden state (what the feature cache stores
    and the linear probe reads).

    Args:
        hidden_states: ``L + 1`` tensors ``(B, F, D)``.
        lengths: ``(B,)`` valid frames per row; padding never enters a statistic.

    Returns:
        ``(B, L + 1, 2, D)`` float32: ``[..., 0, :]`` the mean, ``[..., 1, :]`` the std.
    """
    stacked = torch.stack([hidden.float() for hidden in hidden_states], dim=1)  # (B, L+1, F, D)
    frames = torch.arange(stacked.shape[2], device=stacked.device)
    # (B, F) -> (B, 1, F, 1): broadcasts over layers and channels
    valid = (frames[None, :] < lengths[:, None])[:, None, :, None].to(stacked.dtype)
    count = valid.sum(dim=2).clamp(min=1)  # (B, 1, 1)
    mean = (stacked * valid).sum(dim=2) / count  # (B, L+1, D)
    variance = (((stacked - mean[:, :, None, :]) * valid) ** 2).sum(dim=2) / count
    return torch.stack([mean, variance.clamp(min=0).sqrt()], dim=2)  # (B, L+1, 2, D)


class MaskedMeanPooling(nn.Module):
    """Mean over the valid frames of each row: ``(B, F, D), (B,) -> (B, D)``."""

    output_multiplier = 1

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = check_frames(frames, lengths)
        # (B, F) -> (B, F, 1) so the mask broadcasts over D
        mask = lengths_to_mask(lengths, frames.size(1)).unsqueeze(-1)
        # masked_fill (not multiply) so a NaN/inf in the padding cannot leak through 0 * inf
        summed = frames.masked_fill(~mask, 0.0).sum(dim=1)
        return summed / lengths.unsqueeze(-1).to(frames.dtype)


class AttentiveStatisticsPooling(nn.Module):
    """Attention-weighted mean and standard deviation (Okabe et al., 2018).

    A small MLP scores each frame, ``e_t = v^T tanh(W h_t + b)``; the scores are softmaxed
    over the valid frames only and give a weighted mean ``mu`` and std ``sigma``; the output
    is ``[mu; sigma]``. Written here rather than taken from SpeechBrain because SpeechBrain's
    version batch-normalises its attention input over all frames, padding included, in
    training mode, which would let padding change the pooled vector.

    Args:
        input_dim: ``D``.
        attention_dim: hidden size of the scoring MLP.

    Shapes:
        ``forward(frames (B, F, D), lengths (B,)) -> (B, 2 * D)``.
    """

    output_multiplier = 2

    def __init__(self, input_dim: int, attention_dim: int = 128, eps: float = 1e-6) -> None:
        super().__init__()
        self.scorer = nn.Sequential(
            nn.Linear(input_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1)
        )
        self.eps = eps

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = check_frames(frames, lengths)
        mask = lengths_to_mask(lengths, frames.size(1))
        frames = frames.masked_fill(~mask.unsqueeze(-1), 0.0)
        # (B, F, D) -> (B, F, 1) -> (B, F)
        scores = self.scorer(frames).squeeze(-1)
        scores = scores.masked_fill(~mask, float("-inf"))
        # (B, F) -> (B, F, 1): each frame's weight broadcasts over D; padding weighs exactly 0
        attention = torch.softmax(scores, dim=1).unsqueeze(-1)
        mean = (attention * frames).sum(dim=1)
        # E[x^2] - E[x]^2 (clamped: rounding can make it slightly negative)
        variance = (attention * frames.pow(2)).sum(dim=1) - mean.pow(2)
        std = variance.clamp(min=self.eps).sqrt()
        # (B, D) + (B, D) -> (B, 2D)
        return torch.cat([mean, std], dim=-1)
