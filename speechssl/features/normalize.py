"""Mean-variance normalisation of padded feature batches that never reads the padding.

torchaudio's ``SlidingWindowCmn`` and SpeechBrain's ``InputNormalization`` either see the padding
or keep statistics outside ``state_dict``-friendly float64 buffers, so both are written here:
statistics come from the valid frames only and the padding stays zero.

Example:
    >>> import torch
    >>> feats, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    >>> normalized, _ = UtteranceCMVN()(feats, lengths)
    >>> bool(normalized[1, 2:].eq(0).all())
    True
"""

from __future__ import annotations

import torch
from torch import nn

from speechssl.features.framing import lengths_to_mask, zero_padding

__all__ = ["GlobalCMVN", "UtteranceCMVN", "masked_mean_variance"]


def _check_features(feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    if feats.dim() != 3 or not feats.is_floating_point():
        raise ValueError(f"feats must be a float (B, F, D) tensor, got shape {tuple(feats.shape)}")
    lengths = torch.as_tensor(lengths, device=feats.device)
    if lengths.dim() != 1 or lengths.size(0) != feats.size(0) or lengths.is_floating_point():
        raise ValueError(f"lengths must be integers of shape ({feats.size(0)},)")
    lengths = lengths.long()
    # data-dependent: skipped while a graph is captured (torch.compile, torch.export)
    capturing = torch.compiler.is_compiling()
    if (
        lengths.numel()
        and not capturing
        and (int(lengths.min()) < 0 or int(lengths.max()) > feats.size(1))
    ):
        raise ValueError(f"lengths must lie in [0, {feats.size(1)}], got {lengths.tolist()}")
    return lengths


def masked_mean_variance(
    feats: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance mean and (biased) variance over valid frames: ``(B, D)`` each.

    Rows of length 0 get mean 0 and variance 1.
    """
    # (B, F) -> (B, F, 1) to broadcast over features
    mask = lengths_to_mask(lengths, feats.size(1)).unsqueeze(-1)
    count = lengths.clamp_min(1).unsqueeze(-1).to(feats.dtype)  # (B, 1)
    # masked_fill, not a product, so NaN or inf in the padding cannot reach the sums
    valid = feats.masked_fill(~mask, 0.0)
    mean = valid.sum(dim=1) / count
    centered = (feats - mean.unsqueeze(1)).masked_fill(~mask, 0.0)
    variance = centered.square().sum(dim=1) / count
    empty = (lengths == 0).unsqueeze(-1)
    return mean.masked_fill(empty, 0.0), variance.masked_fill(empty, 1.0)


class UtteranceCMVN(nn.Module):
    """Per-utterance mean (and variance) normalisation: ``(B, F, D), (B,) -> (B, F, D), (B,)``.

    Args:
        normalize_variance: also divide by the standard deviation.
        eps: added to the variance before the square root.
    """

    def __init__(self, normalize_variance: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        self.normalize_variance = normalize_variance
        self.eps = eps

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _check_features(feats, lengths)
        mean, variance = masked_mean_variance(feats, lengths)
        normalized = feats - mean.unsqueeze(1)
        if self.normalize_variance:
            normalized = normalized * (variance + self.eps).rsqrt().unsqueeze(1)
        return zero_padding(normalized, lengths), lengths


class GlobalCMVN(nn.Module):
    """Normalisation by running corpus statistics, stored as checkpointed float64 buffers.

    In training mode (and while ``update_stats``) every call first adds the batch's valid
    frames to the running count, mean and sum of squared deviations (Chan et al.'s parallel
    update, exact whatever the batch sizes), then normalises with the updated statistics.
    In eval mode the statistics are frozen. Before any update the module only zeroes padding.

    Args:
        feature_dim: D.
        normalize_variance: also divide by the running standard deviation.
        update_stats: set False to freeze the statistics in training too (e.g. after a warm-up).
        eps: added to the variance before the square root.

    Example:
        >>> cmvn = GlobalCMVN(3)
        >>> _ = cmvn(torch.randn(4, 10, 3) * 5 + 2, torch.tensor([10, 8, 6, 1]))
        >>> int(cmvn.count)
        25
        >>> sorted(cmvn.state_dict())
        ['count', 'mean', 'sum_squared_deviations']
    """

    def __init__(
        self,
        feature_dim: int,
        normalize_variance: bool = True,
        update_stats: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.normalize_variance = normalize_variance
        self.update_stats = update_stats
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(feature_dim, dtype=torch.float64))
        self.register_buffer(
            "sum_squared_deviations", torch.zeros(feature_dim, dtype=torch.float64)
        )

    @property
    def variance(self) -> torch.Tensor:
        return self.sum_squared_deviations / self.count.clamp_min(1.0)

    @torch.no_grad()
    def update(self, feats: torch.Tensor, lengths: torch.Tensor) -> None:
        """Add the valid frames of ``feats (B, F, D)`` to the running statistics."""
        lengths = _check_features(feats, lengths)
        valid = feats[lengths_to_mask(lengths, feats.size(1))].double()  # (N, D)
        batch_count = valid.size(0)
        if batch_count == 0:
            return
        batch_mean = valid.mean(dim=0)
        batch_deviations = (valid - batch_mean).square().sum(dim=0)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.sum_squared_deviations += batch_deviations + delta.square() * (
            self.count * batch_count / total
        )
        self.mean += delta * (batch_count / total)
        self.count.copy_(total)

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = _check_features(feats, lengths)
        if feats.size(-1) != self.feature_dim:
            raise ValueError(f"expected {self.feature_dim} features, got {feats.size(-1)}")
        if self.training and self.update_stats:
            self.update(feats, lengths)
        # before any statistics (count 0) this is the identity: the mean buffer is still 0,
        # and the scale is 1. A tensor condition, not float(count): torch.export and
        # torch.compile capture it (a random-init mel-input encoder exports to ONNX)
        normalized = feats - self.mean.to(feats.dtype)
        if self.normalize_variance:
            seen = self.count > 0
            scale = torch.where(
                seen, (self.variance + self.eps).rsqrt(), torch.ones_like(self.variance)
            )
            normalized = normalized * scale.to(feats.dtype)
        return zero_padding(normalized, lengths), lengths
