"""Log-mel -> waveform: Griffin-Lim by default, or a user-supplied TorchScript vocoder.

Every vocoder follows the :class:`Vocoder` protocol: ``vocoder(log_mel (B, n_mels, F),
mel_lengths (B,)) -> (wav (B, T), wav_lengths (B,))`` with natural-log magnitude mels as
:meth:`speechssl.tts.model.TacotronTTS.synthesize` returns them, and a ``sample_rate``.

:class:`GriffinLimVocoder` undoes the log, maps mel -> linear magnitude with the
pseudo-inverse of the mel filterbank (clipped at 0), then runs
``torchaudio.transforms.GriffinLim``. The pseudo-inverse is the same minimum-norm
least-squares solution that ``torchaudio.transforms.InverseMelScale`` computes with
``torch.linalg.lstsq`` on every call (80 equations, 513 unknowns: under-determined), but it is
factorised once in ``__init__`` so each utterance costs a single matrix product.

:func:`load_vocoder` returns Griffin-Lim for ``None``/``"griffin-lim"``, or wraps a TorchScript
file (``torch.jit.save`` of a module mapping ``(B, n_mels, F)`` log-mel to ``(B, T)`` or
``(B, 1, T)`` audio, e.g. a HiFi-GAN exported by the user): a hook for a neural vocoder
checkpoint; nothing is downloaded.

Example:
    >>> import torch
    >>> vocoder = GriffinLimVocoder(n_iter=4)
    >>> wav, wav_lengths = vocoder(torch.full((2, 80, 10), -5.0), torch.tensor([10, 6]))
    >>> wav.shape, wav_lengths.tolist()
    (torch.Size([2, 2304]), [2304, 1280])
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

import torch
import torchaudio
from torch import nn

from speechssl.tts.model import TacotronConfig

__all__ = ["GriffinLimVocoder", "TorchScriptVocoder", "Vocoder", "load_vocoder"]


@runtime_checkable
class Vocoder(Protocol):
    """``(log_mel (B, n_mels, F), mel_lengths (B,)) -> (wav (B, T), wav_lengths (B,))``."""

    sample_rate: int

    def __call__(
        self, log_mel: torch.Tensor, mel_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def _check_mel(
    log_mel: torch.Tensor, mel_lengths: torch.Tensor, n_mels: int | None
) -> torch.Tensor:
    if log_mel.dim() != 3 or (n_mels is not None and log_mel.size(1) != n_mels):
        expected = f"(B, {n_mels}, F)" if n_mels is not None else "(B, n_mels, F)"
        raise ValueError(f"log_mel must be {expected}, got shape {tuple(log_mel.shape)}")
    mel_lengths = torch.as_tensor(mel_lengths, device=log_mel.device).long()
    if mel_lengths.shape != (log_mel.size(0),):
        raise ValueError(f"mel_lengths must have shape ({log_mel.size(0)},)")
    if bool((mel_lengths < 1).any()) or int(mel_lengths.max()) > log_mel.size(2):
        raise ValueError(f"mel_lengths must lie in [1, {log_mel.size(2)}]")
    if not bool(torch.isfinite(log_mel).all()):
        raise ValueError("log_mel has NaN or inf values")
    return mel_lengths


class GriffinLimVocoder(nn.Module):
    """Griffin-Lim from natural-log magnitude mels (the settings of :class:`~speechssl.features.LogMel`).

    Args:
        sample_rate, n_fft, hop_length, win_length, f_min, f_max, n_mels: the mel analysis
            (Slaney mel scale and norm, as ``LogMel``).
        power: exponent of the mel magnitudes (1.0 for Tacotron 2's magnitude mels).
        n_iter: Griffin-Lim iterations (32 is torchaudio's default; 60 sounds a little cleaner).
        magnitude_power: raise the linear magnitude to this power before phase recovery; 1.0
            is the plain inverse, Tacotron 1 used 1.5 to reduce the buzz.

    ``wav_lengths = (mel_lengths - 1) * hop_length`` (centred frames). Rows are processed one
    at a time so the padding of one utterance never enters another's phase estimate.
    Phases start at zero (``rand_init=False``) so the output is deterministic.
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        n_mels: int = 80,
        power: float = 1.0,
        n_iter: int = 32,
        magnitude_power: float = 1.0,
    ) -> None:
        super().__init__()
        if n_iter < 1 or magnitude_power <= 0:
            raise ValueError("n_iter must be >= 1 and magnitude_power > 0")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.power = power
        self.magnitude_power = magnitude_power
        filterbank = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1,
            f_min,
            sample_rate / 2.0 if f_max is None else f_max,
            n_mels,
            sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )  # (n_freqs, n_mels): mel = filterbank^T @ linear
        # (n_freqs, n_mels) -> pinv of its transpose: (n_freqs, n_mels), maps mel -> linear
        self.register_buffer("inverse_filterbank", torch.linalg.pinv(filterbank.T.double()).float())
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=n_fft,
            n_iter=n_iter,
            win_length=win_length or n_fft,
            hop_length=hop_length,
            power=1.0,
            rand_init=False,
        )

    @classmethod
    def from_config(cls, config, **overrides) -> GriffinLimVocoder:
        """From a :class:`~speechssl.tts.model.TacotronConfig` (same mel analysis)."""
        settings = {
            "sample_rate": config.sample_rate,
            "n_fft": config.n_fft,
            "hop_length": config.hop_length,
            "win_length": config.win_length,
            "f_min": config.f_min,
            "f_max": config.f_max,
            "n_mels": config.n_mels,
        }
        return cls(**{**settings, **overrides})

    def linear_magnitude(self, log_mel: torch.Tensor) -> torch.Tensor:
        """``(..., n_mels, F)`` log-mel -> ``(..., n_fft // 2 + 1, F)`` magnitude, >= 0."""
        mel = log_mel.exp() ** (1.0 / self.power)  # back to magnitudes
        linear = torch.matmul(self.inverse_filterbank, mel).clamp_min(0.0)
        return linear**self.magnitude_power

    @torch.no_grad()
    def forward(
        self, log_mel: torch.Tensor, mel_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel_lengths = _check_mel(log_mel, mel_lengths, self.n_mels)
        wav_lengths = (mel_lengths - 1) * self.hop_length
        wav = log_mel.new_zeros(log_mel.size(0), max(int(wav_lengths.max()), 1))
        for row, frames in enumerate(mel_lengths.tolist()):
            if frames < 2:
                continue  # one centred frame spans no samples
            waveform = self.griffin_lim(self.linear_magnitude(log_mel[row, :, :frames]))
            length = int(wav_lengths[row])
            wav[row, : min(length, waveform.numel())] = waveform[:length]
        return wav, wav_lengths


class TorchScriptVocoder(nn.Module):
    """Wraps a user's TorchScript mel -> waveform module as a :class:`Vocoder`.

    The scripted module takes ``(B, n_mels, F)`` natural-log mels (this toolkit's analysis)
    and returns ``(B, T)`` or ``(B, 1, T)`` audio at ``sample_rate``; lengths are
    ``mel_lengths * hop_length`` (``T`` at most). A vocoder trained on other mel settings
    (log10 mels, other hop) needs an adapter inside the scripted module.
    """

    def __init__(self, module: torch.jit.ScriptModule, sample_rate: int, hop_length: int):
        super().__init__()
        self.module = module
        self.sample_rate = sample_rate
        self.hop_length = hop_length

    @torch.no_grad()
    def forward(
        self, log_mel: torch.Tensor, mel_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel_lengths = _check_mel(log_mel, mel_lengths, None)
        wav = self.module(log_mel)
        if wav.dim() == 3 and wav.size(1) == 1:
            wav = wav.squeeze(1)  # (B, 1, T) -> (B, T)
        if wav.dim() != 2 or wav.size(0) != log_mel.size(0):
            raise ValueError(
                f"the TorchScript vocoder returned shape {tuple(wav.shape)}; expected "
                f"({log_mel.size(0)}, T) or ({log_mel.size(0)}, 1, T)"
            )
        wav_lengths = (mel_lengths * self.hop_length).clamp_max(wav.size(1))
        return wav, wav_lengths


def load_vocoder(
    path: str | os.PathLike | None = None,
    config=None,
    device: str | torch.device = "cpu",
    **griffin_lim_options,
) -> GriffinLimVocoder | TorchScriptVocoder:
    """``None`` or ``"griffin-lim"`` -> :class:`GriffinLimVocoder`; a file -> :class:`TorchScriptVocoder`.

    Args:
        path: a ``torch.jit.save`` file, or ``None``/``"griffin-lim"``.
        config: a ``TacotronConfig`` for the mel settings (default: ``TacotronConfig()``).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a TorchScript module (e.g. a plain state-dict checkpoint).
    """
    if config is None:
        config = TacotronConfig()
    if path is None or str(path) == "griffin-lim":
        return GriffinLimVocoder.from_config(config, **griffin_lim_options).to(device)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocoder file not found: {path}")
    try:
        module = torch.jit.load(path, map_location=device)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"{path} is not a TorchScript module ({str(error).splitlines()[0][:120]}); export "
            "the vocoder with torch.jit.script/trace and torch.jit.save, taking (B, n_mels, F) "
            "log-mels and returning (B, T) audio"
        ) from None
    module.eval()
    return TorchScriptVocoder(module, config.sample_rate, config.hop_length)
