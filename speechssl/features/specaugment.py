"""SpecAugment (Park et al., 2019) on padded feature batches, on the device.

torchaudio's ``TimeMasking``/``FrequencyMasking`` draw from the global RNG and let a time mask
fall on the padding of short rows, and its ``TimeStretch`` is a phase vocoder, not SpecAugment's
time warp; so masks and warp are drawn here, per utterance, inside each valid length, from a
CPU ``torch.Generator`` (the same masks on any device for the same seed).

Example:
    >>> import torch
    >>> augment = SpecAugment(seed=0)
    >>> feats, lengths = torch.randn(2, 200, 80), torch.tensor([200, 120])
    >>> masked, _ = augment(feats, lengths)
    >>> torch.equal(masked[1, 120:], feats[1, 120:])  # the padding is never masked
    True
    >>> torch.equal(augment.eval()(feats, lengths)[0], feats)  # identity in eval mode
    True
"""

from __future__ import annotations

import torch
from torch import nn

from speechssl.features.framing import lengths_to_mask

__all__ = ["SpecAugment"]


def _uniform_int(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Integers uniform in ``[0, high]`` (inclusive), elementwise, on the CPU."""
    draw = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return (draw * (high.double() + 1)).floor().long().minimum(high.long())


class SpecAugment(nn.Module):
    """Time warp, frequency masks and time masks: ``(B, F, D), (B,) -> (B, F, D), (B,)``.

    Identity in eval mode. Lengths never change; padding stays zero.

    Args:
        freq_mask_width: largest frequency mask (SpecAugment ``F``; LibriSpeech LD policy 27).
        num_freq_masks: frequency masks per utterance (``m_F``).
        time_mask_width: largest time mask in frames (``T``; LD policy 100).
        time_mask_ratio: a time mask covers at most this fraction of its utterance (``p``).
        num_time_masks: time masks per utterance (``m_T``).
        time_warp: largest warp distance in frames (``W``; 0 turns the warp off).
        mask_value: value written into masked cells.
        seed: seeds the module's own CPU generator (used when ``forward`` gets none).
    """

    def __init__(
        self,
        freq_mask_width: int = 27,
        num_freq_masks: int = 2,
        time_mask_width: int = 100,
        time_mask_ratio: float = 1.0,
        num_time_masks: int = 2,
        time_warp: int = 0,
        mask_value: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if min(freq_mask_width, num_freq_masks, time_mask_width, num_time_masks, time_warp) < 0:
            raise ValueError("mask widths, mask counts and time_warp must be non-negative")
        if not 0.0 <= time_mask_ratio <= 1.0:
            raise ValueError(f"time_mask_ratio must lie in [0, 1], got {time_mask_ratio}")
        self.freq_mask_width = freq_mask_width
        self.num_freq_masks = num_freq_masks
        self.time_mask_width = time_mask_width
        self.time_mask_ratio = time_mask_ratio
        self.num_time_masks = num_time_masks
        self.time_warp = time_warp
        self.mask_value = mask_value
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``feats (B, F, D)`` within ``lengths (B,)``; ``generator`` must be a CPU one."""
        if feats.dim() != 3 or not feats.is_floating_point():
            raise ValueError(f"feats must be a float (B, F, D) tensor, got {tuple(feats.shape)}")
        lengths = torch.as_tensor(lengths, device=feats.device)
        if lengths.shape != feats.shape[:1] or lengths.is_floating_point():
            raise ValueError(f"lengths must be integers of shape ({feats.size(0)},)")
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > feats.size(1)):
            raise ValueError(f"lengths must lie in [0, {feats.size(1)}]")
        if not self.training:
            return feats, lengths
        generator = generator if generator is not None else self.generator
        # the random draws are tiny: make them on the CPU so a seed means the same masks anywhere
        cpu_lengths = lengths.long().cpu()
        if self.time_warp > 0:
            feats = self._warp(feats, cpu_lengths, generator)
        batch_size, num_frames, feature_dim = feats.shape
        masked = torch.zeros(
            batch_size, num_frames, feature_dim, dtype=torch.bool, device=feats.device
        )
        if self.num_freq_masks:
            widths = _uniform_int(
                torch.full(
                    (batch_size, self.num_freq_masks), min(self.freq_mask_width, feature_dim)
                ),
                generator,
            )
            starts = _uniform_int(feature_dim - widths, generator)
            bins = torch.arange(feature_dim)
            # (B, M, 1) vs (D,) -> (B, M, D) -> any over masks -> (B, 1, D)
            in_mask = (bins >= starts.unsqueeze(-1)) & (bins < (starts + widths).unsqueeze(-1))
            masked |= in_mask.any(dim=1).unsqueeze(1).to(feats.device)
        if self.num_time_masks:
            longest = torch.minimum(
                torch.full_like(cpu_lengths, self.time_mask_width),
                (cpu_lengths.double() * self.time_mask_ratio).floor().long(),
            )
            # (B,) -> (B, M)
            widths = _uniform_int(longest.unsqueeze(1).expand(-1, self.num_time_masks), generator)
            starts = _uniform_int(cpu_lengths.unsqueeze(1) - widths, generator)
            frames = torch.arange(num_frames)
            # (B, M, 1) vs (F,) -> (B, M, F) -> any over masks -> (B, F, 1)
            in_mask = (frames >= starts.unsqueeze(-1)) & (frames < (starts + widths).unsqueeze(-1))
            masked |= in_mask.any(dim=1).unsqueeze(-1).to(feats.device)
        # frequency masks span every frame: keep them off the padding
        masked &= lengths_to_mask(lengths.long(), num_frames).unsqueeze(-1)
        return feats.masked_fill(masked, self.mask_value), lengths

    def _warp(
        self, feats: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Piecewise-linear time warp inside each length (SpecAugment's warp, without the
        sparse image warp: a point ``c`` moves to ``c + w`` and both sides stretch linearly)."""
        batch_size, num_frames, _ = feats.shape
        warp = self.time_warp
        # rows too short to warp keep the identity map
        can_warp = lengths > 2 * warp + 1
        centers = warp + _uniform_int((lengths - 2 * warp - 1).clamp_min(0), generator)
        shifts = _uniform_int(torch.full_like(lengths, 2 * warp), generator) - warp
        shifts = torch.where(can_warp, shifts, torch.zeros_like(shifts)).double()
        centers = centers.double()
        targets = centers + shifts
        last = (lengths - 1).clamp_min(1).double()
        position = torch.arange(num_frames, dtype=torch.float64).expand(batch_size, -1)
        # (B, F): the input position each output frame reads from
        left = position * (centers / targets.clamp_min(1e-9)).unsqueeze(1)
        right = centers.unsqueeze(1) + (position - targets.unsqueeze(1)) * (
            (last - centers) / (last - targets).clamp_min(1e-9)
        ).unsqueeze(1)
        source = torch.where(position < targets.unsqueeze(1), left, right)
        inside = position < lengths.unsqueeze(1)
        source = torch.where(inside & can_warp.unsqueeze(1), source, position)
        source = torch.minimum(source, last.unsqueeze(1)).clamp_min(0.0)
        below = source.floor().long()
        above = torch.minimum(below + 1, (lengths - 1).clamp_min(0).unsqueeze(1))
        above = torch.where(inside, above, below)
        weight = (source - below.double()).float().to(feats.device).unsqueeze(-1)  # (B, F, 1)
        below, above = below.to(feats.device), above.to(feats.device)
        # (B, F) -> (B, F, D) to gather whole frames
        low = feats.gather(1, below.unsqueeze(-1).expand_as(feats))
        high = feats.gather(1, above.unsqueeze(-1).expand_as(feats))
        warped = torch.lerp(low, high, weight.to(feats.dtype))
        valid = lengths_to_mask(lengths.to(feats.device), num_frames).unsqueeze(-1)
        return torch.where(valid, warped, feats)
