"""Filterbank front end and convolutional subsampling for the filterbank-based encoders.

The front end is not trained: log-mel filterbanks from :class:`speechssl.features.Fbank`
followed by per-utterance or global CMVN. It lives inside the encoder so the encoder
still takes waveforms, and objectives can call ``encoder.features(wav, lengths)`` to see
what the Transformer sees.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speechssl.features.fbank import Fbank
from speechssl.features.normalize import GlobalCMVN, UtteranceCMVN

from .base import (
    Encoder,
    EncoderOutput,
    check_lengths,
    lengths_to_padding_mask,
    waveform_batch,
)

NORMALIZATIONS = ("utterance", "global", "none")


class FbankFrontEnd(nn.Module):
    """wav (B, T), lengths (B,) -> log-mel (B, F, n_mels), frame lengths (B,).

    Example:
        >>> front_end = FbankFrontEnd(n_mels=40)
        >>> feats, lengths = front_end(torch.randn(2, 16000), torch.tensor([16000, 8000]))
        >>> feats.shape, lengths.tolist()
        (torch.Size([2, 98, 40]), [98, 48])
    """

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16000,
        normalization: str = "utterance",
        kaldi_compatible: bool = True,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        self.n_mels = n_mels
        self.fbank = Fbank(
            n_mels=n_mels, sample_rate=sample_rate, kaldi_compatible=kaldi_compatible
        )
        if normalization == "utterance":
            self.normalize = UtteranceCMVN()
        elif normalization == "global":
            self.normalize = GlobalCMVN(n_mels)
        else:
            self.normalize = None

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return self.fbank.output_lengths(lengths)

    @torch.no_grad()
    def forward(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        # features are computed in float32 even under autocast: log-mel needs the range
        if wav.shape[1] == 0:
            return wav.new_zeros(wav.shape[0], 0, self.n_mels), torch.zeros_like(lengths)
        # Fbank rejects empty rows; a 1-sample row gives the same 0 frames
        lengths = lengths.clamp(min=1)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            feats, feat_lengths = self.fbank(wav.float(), lengths)
            if self.normalize is not None and feats.shape[1] > 0:
                feats, feat_lengths = self.normalize(feats, feat_lengths)
        return feats, feat_lengths


def subsampled_lengths(lengths: Tensor, num_layers: int = 2) -> Tensor:
    """Frames after ``num_layers`` convolutions of kernel 3, stride 2, no padding."""
    for _ in range(num_layers):
        lengths = (torch.div(lengths - 3, 2, rounding_mode="floor") + 1).clamp(min=0)
    return lengths


class Conv2dSubsampling(nn.Module):
    """4x time subsampling by two 3x3 stride-2 Conv2d + ReLU, then a linear projection.

    The speech-Transformer front end of Dong et al. (2018) and ESPnet (Karita et al., 2019):
    (B, F, n_mels) -> (B, ~F/4, D). No padding, so each valid output frame sees only valid
    input frames and padding cannot leak in.
    """

    def __init__(self, n_mels: int, embed_dim: int, channels: int | None = None):
        super().__init__()
        channels = channels or embed_dim
        self.convolutions = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        reduced_mels = ((n_mels - 3) // 2 + 1 - 3) // 2 + 1
        self.projection = nn.Linear(channels * reduced_mels, embed_dim)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats (B, F, n_mels) -> (B, F', D), lengths (B,) -> (B,)."""
        out_lengths = subsampled_lengths(lengths)
        # integer arithmetic on the shape (symbolic under torch.export), not a tensor
        num_frames = feats.shape[1]
        for _ in range(2):
            num_frames = (num_frames - 3) // 2 + 1
        if num_frames <= 0:
            return feats.new_zeros(feats.shape[0], 0, self.projection.out_features), out_lengths
        x = self.convolutions(feats[:, None])  # (B, F, M) -> (B, 1, F, M) -> (B, C, F', M')
        batch_size, channels, frames, mels = x.shape
        # (B, C, F', M') -> (B, F', C, M') -> (B, F', C * M')
        x = x.transpose(1, 2).reshape(batch_size, frames, channels * mels)
        x = self.projection(x)
        return x.masked_fill(
            lengths_to_padding_mask(out_lengths, frames)[..., None], 0.0
        ), out_lengths


class FbankEncoder(Encoder):
    """Plumbing shared by the filterbank-based encoders: the front end, ``features``, the
    input check of ``forward_features`` and ``forward = forward_features(features(wav))``.

    Subclasses define ``forward_features(feats, lengths)`` and read ``config.n_mels``,
    ``config.sample_rate``, ``config.normalization``, ``config.kaldi_compatible``.
    """

    def _build_front_end(self, config) -> None:
        self.front_end = FbankFrontEnd(
            config.n_mels, config.sample_rate, config.normalization, config.kaldi_compatible
        )

    def features(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav (B, T) -> normalised log-mel (B, F, n_mels) and frame lengths (B,)."""
        wav, lengths = waveform_batch(wav, lengths)
        return self.front_end(wav, lengths)

    def _check_features(self, feats: Tensor, lengths: Tensor | None) -> Tensor:
        """Validate log-mel input (B, F, n_mels); returns lengths (B,) (full when None)."""
        if feats.ndim != 3 or feats.shape[2] != self.config.n_mels:
            raise ValueError(
                f"expected features (B, F, {self.config.n_mels}), got {tuple(feats.shape)}"
            )
        return check_lengths(lengths, feats.shape[0], feats.shape[1], feats.device)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        feats, feat_lengths = self.features(wav, lengths)
        return self.forward_features(feats, feat_lengths)
