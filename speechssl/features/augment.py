"""Waveform augmentation on the device: speed perturbation, gain and additive noise.

Each utterance draws its own speed factor, gain and SNR. torchaudio's ``SpeedPerturbation``
draws one factor for the whole batch from the global RNG, so rows are grouped by their drawn
factor here and each group goes through ``torchaudio.functional.speed``; noise is mixed with
``torchaudio.functional.add_noise``, whose signal and noise powers use the valid samples only.

Example:
    >>> import torch
    >>> augment = WaveformAugment(speed_factors=(0.9, 1.1), seed=0)
    >>> wav, lengths = augment(torch.randn(3, 16000), torch.tensor([16000, 12000, 8000]))
    >>> wav.size(1) == int(lengths.max()), lengths.tolist() != [16000, 12000, 8000]
    (True, True)
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

from speechssl.features.framing import check_batch, zero_padding

__all__ = ["WaveformAugment"]


def _zero_pad_samples(wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    # (B, T) -> (B, T, 1) -> (B, T): zero_padding works on dim 1 of (B, F, ...)
    return zero_padding(wav.unsqueeze(-1), lengths).squeeze(-1)


class WaveformAugment(nn.Module):
    """Speed, gain and noise: ``(B, T), (B,) -> (B, T'), (B,)``; identity in eval mode.

    Args:
        sample_rate: input rate in Hz (speed perturbation resamples from ``factor * rate``).
        speed_factors: factors drawn uniformly per utterance (``()`` or ``(1.0,)`` turns it off);
            a factor above 1 makes the utterance shorter, so lengths change.
        gain_db: ``(low, high)`` range of a uniform random gain in dB (``None`` turns it off).
        snr_db: ``(low, high)`` range of a uniform random SNR in dB (``None`` turns noise off).
        noise_probability: chance that an utterance gets noise.
        seed: seeds the module's CPU generator for the per-utterance draws; the white noise
            itself comes from a generator on the waveform's device seeded from it.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1),
        gain_db: tuple[float, float] | None = (-6.0, 6.0),
        snr_db: tuple[float, float] | None = (5.0, 20.0),
        noise_probability: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if any(factor <= 0 for factor in speed_factors):
            raise ValueError(f"speed factors must be positive, got {speed_factors}")
        for name, span in (("gain_db", gain_db), ("snr_db", snr_db)):
            if span is not None and not (len(span) == 2 and span[0] <= span[1]):
                raise ValueError(f"{name} must be a (low, high) pair, got {span}")
        if not 0.0 <= noise_probability <= 1.0:
            raise ValueError(f"noise_probability must lie in [0, 1], got {noise_probability}")
        self.sample_rate = sample_rate
        self.speed_factors = tuple(float(factor) for factor in speed_factors)
        self.gain_db = gain_db
        self.snr_db = snr_db
        self.noise_probability = noise_probability
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``wav (B, T)`` within ``lengths (B,)``.

        Args:
            noise: optional ``(B, T_noise)`` noise recordings, tiled or cut to the output length;
                white Gaussian noise when ``None``.
            generator: CPU generator for the draws (defaults to the module's own).

        Returns:
            ``(B, T')`` augmented waveforms (zero beyond each length) and ``(B,)`` new lengths.
        """
        lengths = check_batch(wav, lengths)
        if not self.training:
            return wav, lengths
        generator = generator if generator is not None else self.generator
        batch_size = wav.size(0)
        wav = _zero_pad_samples(wav, lengths)
        if len(self.speed_factors) > 1 or self.speed_factors not in ((), (1.0,)):
            wav, lengths = self._speed(wav, lengths, generator)
        if self.gain_db is not None:
            low, high = self.gain_db
            gain_db = low + (high - low) * torch.rand(batch_size, generator=generator)
            # (B,) -> (B, 1) to scale whole rows
            wav = wav * (10.0 ** (gain_db / 20.0)).to(wav).unsqueeze(1)
        if self.snr_db is not None and self.noise_probability > 0:
            wav = self._add_noise(wav, lengths, noise, generator)
        return wav, lengths

    def _speed(
        self, wav: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        choice = torch.randint(len(self.speed_factors), (wav.size(0),), generator=generator)
        pieces, new_lengths = [], torch.empty_like(lengths)
        for index, factor in enumerate(self.speed_factors):
            rows = (choice == index).nonzero().flatten()
            if rows.numel() == 0:
                continue
            rows = rows.to(wav.device)
            group_lengths = lengths[rows]
            # trim the group to its own longest row before resampling: less work, same result
            group = wav[rows, : int(group_lengths.max())]
            if factor == 1.0:
                resampled, resampled_lengths = group, group_lengths
            else:
                resampled, resampled_lengths = torchaudio.functional.speed(
                    group, self.sample_rate, factor, group_lengths
                )
            pieces.append((rows, resampled))
            new_lengths[rows] = resampled_lengths
        output = wav.new_zeros(wav.size(0), int(new_lengths.max()))
        for rows, resampled in pieces:
            width = min(resampled.size(1), output.size(1))
            output[rows, :width] = resampled[:, :width]
        # resampling rings past the end of each row: keep only the valid samples
        return _zero_pad_samples(output, new_lengths), new_lengths

    def _add_noise(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor,
        noise: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        batch_size, num_samples = wav.shape
        low, high = self.snr_db
        snr = low + (high - low) * torch.rand(batch_size, generator=generator)
        chosen = torch.rand(batch_size, generator=generator) < self.noise_probability
        if noise is None:
            device_seed = int(torch.randint(2**62, (), generator=generator))
            device_generator = torch.Generator(device=wav.device).manual_seed(device_seed)
            noise = torch.randn(
                wav.shape, generator=device_generator, device=wav.device, dtype=wav.dtype
            )
        else:
            if noise.dim() != 2 or noise.size(0) != batch_size or noise.size(1) == 0:
                raise ValueError(
                    f"noise must be a ({batch_size}, T_noise) tensor, got {tuple(noise.shape)}"
                )
            if not bool(torch.isfinite(noise).all()):
                raise ValueError("noise holds non-finite values")
            repeats = math.ceil(num_samples / noise.size(1))
            # (B, T_noise) -> (B, T_noise * repeats) -> (B, T): tile then cut to the batch length
            noise = noise.to(wav).repeat(1, repeats)[:, :num_samples]
        noisy = torchaudio.functional.add_noise(wav, noise, snr.to(wav), lengths)
        # silent noise over a row's valid samples gives an infinite scale: leave that row clean
        chosen = chosen.to(wav.device) & torch.isfinite(noisy).all(dim=1)
        noisy = torch.where(chosen.unsqueeze(1), noisy, wav)
        return _zero_pad_samples(noisy, lengths)
