"""Utterance mixing (UniSpeech-SAT, Chen et al., 2021, Sec. 3.2), batched on the device.

With probability ``mixing_prob`` an utterance (the *primary*) gets a random crop of
another utterance of the same batch (the *secondary*) added on top of it:

- the overlap length is drawn uniformly in ``[0, max_overlap]`` of the primary's valid
  length (and never longer than the secondary), so the primary speaker stays dominant;
- the crop is placed at a uniform position inside the primary's valid samples, never
  over its padding;
- the secondary is scaled so that the primary-to-secondary energy ratio over the
  overlapped region is uniform in ``energy_ratio_db`` (dB).

The HuBERT targets stay the primary's: this module only touches waveforms.

Differences from the authors' data loader (``UniSpeech-SAT/fairseq/data/audio/
unispeech_sat_dataset.py``, ``mixing_collated_audios``): there every row is cropped to the
shortest utterance, the partner may be the utterance itself and the powers are those of
the whole rows; here rows keep their own lengths, the partner is always another
utterance, and the ratio is set over the overlapped region, where the two speakers meet.
It runs on the training device without a Python loop over the batch.

Example:
    >>> import torch
    >>> mixing = UtteranceMixing(mixing_prob=1.0)  # training mode: mixes every row
    >>> wav, lengths = torch.randn(3, 16000), torch.tensor([16000, 12000, 8000])
    >>> mixed, info = mixing(wav, lengths, generator=torch.Generator().manual_seed(0))
    >>> mixed.shape, bool((info.overlap <= lengths // 2).all())
    (torch.Size([3, 16000]), True)
    >>> bool((mixed[1, 12000:] == wav[1, 12000:]).all())  # padding untouched
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["MixingConfig", "MixingInfo", "UtteranceMixing"]


@dataclass
class MixingConfig:
    """Utterance-mixing hyperparameters (UniSpeech-SAT Sec. 3.2)."""

    enabled: bool = False  # switch for the ablation (UniSpeech-SAT turns it on)
    # chance that an utterance gets a secondary (fairseq UniSpeech-SAT ``mixing_prob``;
    # the paper's ablation uses 0.5 when mixing is on, the code default is 0.2)
    mixing_prob: float = 0.5
    # largest overlap as a fraction of the primary's length (``mixing_max_len`` = 2 -> T // 2)
    max_overlap: float = 0.5
    # primary-to-secondary energy ratio range in dB (the authors' code draws uniform(-5, 5))
    energy_ratio_db: list[float] = field(default_factory=lambda: [-5.0, 5.0])


class MixingInfo(NamedTuple):
    """What :class:`UtteranceMixing` did to each row (all ``(B,)`` on the batch's device).

    Attributes:
        mixed: True where a secondary was added.
        partner: index of the secondary utterance (the row itself where not mixed).
        overlap: overlapped samples (0 where not mixed).
        primary_start: first overlapped sample in the primary.
        secondary_start: first sample of the crop taken from the secondary.
        energy_ratio_db: realised primary-to-added energy ratio over the overlap (NaN where
            not mixed).
    """

    mixed: Tensor
    partner: Tensor
    overlap: Tensor
    primary_start: Tensor
    secondary_start: Tensor
    energy_ratio_db: Tensor


def _uniform(shape: tuple[int, ...], device, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) draws made with ``generator`` (on its own device) and moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


class UtteranceMixing(nn.Module):
    """Add a random crop of another utterance of the batch to some utterances.

    ``forward(wav (B, T), lengths (B,), generator=None) -> (mixed (B, T), MixingInfo)``;
    identity in eval mode, for ``B < 2`` and for ``mixing_prob == 0``.

    Args:
        mixing_prob: chance that an utterance is mixed.
        max_overlap: largest overlap as a fraction of the primary's valid length, in [0, 1].
        energy_ratio_db: ``(low, high)`` primary-to-secondary energy ratio in dB.
    """

    def __init__(
        self,
        mixing_prob: float = 0.5,
        max_overlap: float = 0.5,
        energy_ratio_db: tuple[float, float] | list[float] = (-5.0, 5.0),
    ) -> None:
        super().__init__()
        if not 0.0 <= mixing_prob <= 1.0:
            raise ValueError(f"mixing_prob must lie in [0, 1], got {mixing_prob}")
        if not 0.0 <= max_overlap <= 1.0:
            raise ValueError(f"max_overlap must lie in [0, 1], got {max_overlap}")
        low, high = (float(value) for value in energy_ratio_db)
        if low > high:
            raise ValueError(
                f"energy_ratio_db must be (low, high) with low <= high, got {energy_ratio_db}"
            )
        self.mixing_prob = mixing_prob
        self.max_overlap = max_overlap
        self.energy_ratio_db = (low, high)

    @classmethod
    def from_config(cls, config: MixingConfig) -> UtteranceMixing:
        return cls(config.mixing_prob, config.max_overlap, tuple(config.energy_ratio_db))

    def extra_repr(self) -> str:
        return (
            f"mixing_prob={self.mixing_prob}, max_overlap={self.max_overlap}, "
            f"energy_ratio_db={self.energy_ratio_db}"
        )

    def forward(
        self, wav: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, MixingInfo]:
        """wav (B, T) zero-padded, lengths (B,) samples -> (mixed wav (B, T), MixingInfo)."""
        if wav.ndim != 2:
            raise ValueError(f"expected a waveform batch of shape (B, T), got {tuple(wav.shape)}")
        if lengths.shape != (wav.shape[0],):
            raise ValueError(
                f"expected lengths of shape ({wav.shape[0]},), got {tuple(lengths.shape)}"
            )
        batch_size, num_samples = wav.shape
        device = wav.device
        lengths = lengths.to(device=device, dtype=torch.long)
        rows = torch.arange(batch_size, device=device)
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        info = MixingInfo(
            mixed=torch.zeros(batch_size, dtype=torch.bool, device=device),
            partner=rows,
            overlap=zeros,
            primary_start=zeros,
            secondary_start=zeros,
            energy_ratio_db=torch.full((batch_size,), math.nan, device=device),
        )
        if not self.training or batch_size < 2 or self.mixing_prob == 0.0:
            return wav, info

        draws = _uniform((6, batch_size), device, generator)  # one row of draws per decision
        chosen = draws[0] < self.mixing_prob
        # another row of the batch: shift by 1 .. B-1 places, uniformly
        partner = (
            rows + 1 + (draws[1] * (batch_size - 1)).long().clamp(max=batch_size - 2)
        ) % batch_size
        primary_lengths = lengths
        secondary_lengths = lengths[partner]
        overlap = (draws[2] * self.max_overlap * primary_lengths).long()
        overlap = torch.minimum(overlap, secondary_lengths)
        # uniform start positions such that the overlap fits inside both valid regions
        primary_start = (draws[3] * (primary_lengths - overlap + 1)).long()
        primary_start = torch.minimum(primary_start, primary_lengths - overlap)
        secondary_start = (draws[4] * (secondary_lengths - overlap + 1)).long()
        secondary_start = torch.minimum(secondary_start, secondary_lengths - overlap)
        low, high = self.energy_ratio_db
        target_ratio_db = low + (high - low) * draws[5]

        positions = torch.arange(num_samples, device=device)
        # (T,) vs (B, 1) -> (B, T): True on the primary's overlapped samples
        region = (positions >= primary_start[:, None]) & (
            positions < (primary_start + overlap)[:, None]
        )
        # sample of the secondary that lands on each primary sample (clamped outside the region)
        source_index = (
            positions[None, :] - primary_start[:, None] + secondary_start[:, None]
        ).clamp(0, num_samples - 1)
        signal = wav.float()
        secondary = signal[partner].gather(1, source_index) * region  # (B, T), zero off the overlap

        count = overlap.clamp(min=1).to(signal.dtype)
        primary_power = (signal.square() * region).sum(dim=1) / count
        secondary_power = secondary.square().sum(dim=1) / count
        # gain g with 10 log10(P_primary / (g^2 P_secondary)) = target
        usable = chosen & (overlap > 0) & (primary_power > 0) & (secondary_power > 0)
        gain_squared = primary_power / (secondary_power * 10.0 ** (target_ratio_db / 10.0))
        gain = torch.where(usable, gain_squared, torch.zeros_like(gain_squared)).sqrt()
        added = secondary * gain[:, None]
        mixed = (signal + added).to(wav.dtype)

        added_power = added.square().sum(dim=1) / count
        realised_db = 10.0 * torch.log10(primary_power / added_power)
        info = MixingInfo(
            mixed=usable,
            partner=torch.where(usable, partner, rows),
            overlap=torch.where(usable, overlap, zeros),
            primary_start=torch.where(usable, primary_start, zeros),
            secondary_start=torch.where(usable, secondary_start, zeros),
            energy_ratio_db=torch.where(
                usable, realised_db, torch.full_like(realised_db, math.nan)
            ),
        )
        return mixed, info
