"""librosa-style log-mel spectrograms for a padded batch, and the way back to a waveform.

:class:`LogMel` matches ``log(max(librosa.feature.melspectrogram(...), floor))`` per utterance
(centred frames, zero ``pad_mode="constant"`` edges, Hann window, Slaney mel scale and
normalisation) to 1e-3 absolute on real speech at the default ``floor``. Its defaults are the
80-bin 22.05 kHz mel targets of Tacotron 2; for librosa's own defaults pass
``n_fft=2048, hop_length=512, n_mels=128, power=2.0, f_max=None``.

Example:
    >>> import torch
    >>> logmel = LogMel()
    >>> feats, feat_lengths = logmel(torch.randn(2, 22050), torch.tensor([22050, 1000]))
    >>> feats.shape, feat_lengths.tolist()
    (torch.Size([2, 87, 80]), [87, 4])
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from speechssl.features.framing import check_batch, frame_lengths, zero_padding

__all__ = ["LogMel"]


class LogMel(nn.Module):
    """Log-mel spectrogram: ``(B, T), (B,) -> (B, F, n_mels), (B,)`` with ``F = 1 + T // hop``.

    Args:
        sample_rate: input rate in Hz.
        n_fft, win_length, hop_length: STFT sizes in samples (``win_length`` defaults to ``n_fft``).
        f_min, f_max: mel range in Hz (``f_max=None`` is Nyquist).
        n_mels: mel bins.
        power: 1.0 for magnitude (Tacotron 2 targets), 2.0 for power (librosa's default).
        floor: values are clamped to at least ``floor`` before the natural log.

    Example:
        >>> logmel = LogMel(sample_rate=16000, n_fft=400, hop_length=160, f_max=8000)
        >>> logmel(torch.zeros(1, 1600), torch.tensor([1600]))[0].shape
        torch.Size([1, 11, 80])
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
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if not 0 < win_length <= n_fft or hop_length <= 0:
            raise ValueError(
                f"need 0 < win_length <= n_fft and hop_length > 0, got {win_length}, {n_fft}, "
                f"{hop_length}"
            )
        if floor <= 0:
            raise ValueError(f"floor must be positive, got {floor}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.f_min = f_min
        self.f_max = f_max if f_max is not None else sample_rate / 2.0
        self.n_mels = n_mels
        self.power = power
        self.floor = floor
        # center=True with zero padding is librosa's framing; Slaney scale and norm are
        # librosa's mel defaults (htk=False, norm="slaney").
        self.mel_spectrogram = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=self.f_max,
            n_mels=n_mels,
            power=power,
            center=True,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        )

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames per utterance: centred framing gives ``1 + T // hop``."""
        return frame_lengths(lengths, self.win_length, self.hop_length, snip_edges=False)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, T)``, ``lengths (B,)`` samples -> ``(B, F, n_mels)``, ``(B,)`` frames."""
        lengths = check_batch(wav, lengths)
        feat_lengths = self.output_lengths(lengths)
        num_frames = int(feat_lengths.max())
        wav = wav.float()
        # Zero the padding so each row's last frames see zeros past its end, exactly like
        # librosa's constant padding of the unpadded utterance; (B, T) -> (B, T, 1) -> (B, T).
        wav = zero_padding(wav.unsqueeze(-1), lengths).squeeze(-1)
        # trim to the longest row so no frame is computed past it
        wav = wav[:, : int(lengths.max())]
        # float32 even inside an autocast region: a half-precision mel matmul loses the floor
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel = self.mel_spectrogram(wav)[..., :num_frames]  # (B, n_mels, F)
        # (B, n_mels, F) -> (B, F, n_mels)
        log_mel = mel.clamp_min(self.floor).log().transpose(1, 2)
        return zero_padding(log_mel, feat_lengths), feat_lengths

    def inverse(
        self, log_mel: torch.Tensor, feat_lengths: torch.Tensor, n_iter: int = 32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms from log-mels: ``(B, F, n_mels), (B,) -> (B, T), (B,)`` samples.

        mel -> linear magnitude through ``torchaudio.transforms.InverseMelScale`` (least
        squares, clipped at 0), then ``torchaudio.transforms.GriffinLim``. Rows are
        reconstructed one by one so padding frames do not enter the phase estimate.
        """
        if log_mel.dim() != 3 or log_mel.size(-1) != self.n_mels:
            raise ValueError(
                f"log_mel must be (B, F, {self.n_mels}), got shape {tuple(log_mel.shape)}"
            )
        feat_lengths = torch.as_tensor(feat_lengths, device=log_mel.device).long()
        if feat_lengths.dim() != 1 or feat_lengths.size(0) != log_mel.size(0):
            raise ValueError(f"feat_lengths must have shape ({log_mel.size(0)},)")
        if bool((feat_lengths < 1).any()) or int(feat_lengths.max()) > log_mel.size(1):
            raise ValueError("feat_lengths must lie in [1, F]")
        inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=self.n_fft // 2 + 1,
            n_mels=self.n_mels,
            sample_rate=self.sample_rate,
            f_min=self.f_min,
            f_max=self.f_max,
            norm="slaney",
            mel_scale="slaney",
        ).to(log_mel.device)
        griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=self.n_fft,
            win_length=self.win_length,
            hop_length=self.hop_length,
            power=self.power,
            n_iter=n_iter,
        ).to(log_mel.device)
        wav_lengths = (feat_lengths - 1) * self.hop_length
        waveforms = log_mel.new_zeros(log_mel.size(0), int(wav_lengths.max()))
        for row, length in enumerate(feat_lengths.tolist()):
            # (F, n_mels) -> (n_mels, F), the layout torchaudio's spectrogram ops use
            mel = log_mel[row, :length].exp().T
            linear = inverse_mel(mel)  # (n_fft // 2 + 1, F)
            wav = griffin_lim(linear)
            waveforms[row, : wav.numel()] = wav[: waveforms.size(1)]
        return waveforms, wav_lengths
