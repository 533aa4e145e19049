"""Batched Kaldi MFCCs with deltas: the 39-dim features of HuBERT's first k-means iteration.

fairseq's ``dump_mfcc_feature.py`` computes, per utterance,
``torchaudio.compliance.kaldi.mfcc(wav, sample_frequency=16000, use_energy=False)`` (13 ceps from
23 mel bins), then ``torchaudio.functional.compute_deltas`` twice, and concatenates
``[mfcc, delta, delta_delta]``. :class:`MFCC` does the same for a padded batch.

Example:
    >>> import torch
    >>> feats, feat_lengths = MFCC()(torch.randn(2, 16000), torch.tensor([16000, 4000]))
    >>> feats.shape, feat_lengths.tolist()
    (torch.Size([2, 98, 39]), [98, 23])
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import nn

from speechssl.features.fbank import Fbank
from speechssl.features.framing import zero_padding

__all__ = ["MFCC", "kaldi_dct_matrix", "replicate_padding"]


def kaldi_dct_matrix(num_ceps: int, num_mel_bins: int) -> torch.Tensor:
    """``(num_mel_bins, num_ceps)`` DCT as Kaldi uses it (orthonormal, C0 weight sqrt(1/M))."""
    # torchaudio keeps this in a private helper of compliance.kaldi, so rebuild it from the
    # public create_dct rather than import a private name.
    dct = torchaudio.functional.create_dct(num_mel_bins, num_mel_bins, "ortho")
    dct[:, 0] = math.sqrt(1.0 / num_mel_bins)
    return dct[:, :num_ceps]


def replicate_padding(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Copy each row's last valid step over its padding along dim 1 of ``(B, F, D)``.

    ``compute_deltas`` pads by replicating the edge frame; filling the padding the same way
    makes the batched deltas equal the per-utterance ones inside each length.
    """
    steps = torch.arange(values.size(1), device=values.device)
    # (B, F): index of the frame to read, clamped to the last valid frame of the row
    source = torch.minimum(steps.unsqueeze(0), (lengths - 1).clamp_min(0).unsqueeze(1))
    # (B, F) -> (B, F, D) to gather whole feature vectors
    return values.gather(1, source.unsqueeze(-1).expand_as(values))


class MFCC(nn.Module):
    """Kaldi MFCCs plus deltas: ``(B, T), (B,) -> (B, F, num_ceps * (1 + num_deltas)), (B,)``.

    Each row equals fairseq's HuBERT MFCC dump of the unpadded utterance when
    ``kaldi_compatible=True`` (default). Frames beyond each length are zero.

    Args:
        num_ceps: cepstra kept (Kaldi default 13).
        n_mels: mel bins before the DCT (Kaldi default 23).
        cepstral_lifter: Kaldi's lifter coefficient (0 disables).
        num_deltas: 0, 1 or 2 orders of ``compute_deltas`` appended (2 gives 39 dims).
        delta_window: ``win_length`` of ``compute_deltas``.
        sample_rate, kaldi_compatible: passed to :class:`~speechssl.features.Fbank`.

    Example:
        >>> MFCC(num_deltas=0)(torch.zeros(1, 400), torch.tensor([400]))[0].shape
        torch.Size([1, 1, 13])
    """

    def __init__(
        self,
        num_ceps: int = 13,
        n_mels: int = 23,
        cepstral_lifter: float = 22.0,
        num_deltas: int = 2,
        delta_window: int = 5,
        sample_rate: int = 16000,
        kaldi_compatible: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < num_ceps <= n_mels:
            raise ValueError(f"need 0 < num_ceps <= n_mels, got {num_ceps} and {n_mels}")
        if num_deltas not in (0, 1, 2):
            raise ValueError(f"num_deltas must be 0, 1 or 2, got {num_deltas}")
        self.fbank = Fbank(
            n_mels=n_mels, sample_rate=sample_rate, kaldi_compatible=kaldi_compatible
        )
        self.num_deltas = num_deltas
        self.delta_window = delta_window
        transform = kaldi_dct_matrix(num_ceps, n_mels)
        if cepstral_lifter != 0.0:
            index = torch.arange(num_ceps, dtype=transform.dtype)
            lifter = 1.0 + 0.5 * cepstral_lifter * torch.sin(math.pi * index / cepstral_lifter)
            # liftering scales columns, so fold it into the DCT: one matmul instead of two ops
            transform = transform * lifter
        self.register_buffer("dct", transform.float(), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.dct.size(1) * (1 + self.num_deltas)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav (B, T)``, ``lengths (B,)`` samples -> ``(B, F, output_dim)``, ``(B,)`` frames."""
        log_mel, feat_lengths = self.fbank(wav, lengths)
        with torch.autocast(device_type=log_mel.device.type, enabled=False):  # keep float32
            cepstra = torch.matmul(log_mel, self.dct)  # (B, F, n_mels) @ (n_mels, C) -> (B, F, C)
        orders = [cepstra]
        for _ in range(self.num_deltas):
            previous = replicate_padding(orders[-1], feat_lengths)
            # compute_deltas works on the last dim: (B, F, C) -> (B, C, F) and back
            delta = torchaudio.functional.compute_deltas(
                previous.transpose(1, 2), win_length=self.delta_window
            ).transpose(1, 2)
            orders.append(delta)
        feats = torch.cat(orders, dim=-1)  # (B, F, C * (1 + num_deltas))
        return zero_padding(feats, feat_lengths), feat_lengths
