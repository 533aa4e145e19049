"""Batched, length-aware feature transforms that run on the training device.

Every transform is an ``nn.Module`` with ``forward(wav (B, T), lengths (B,)) -> (feats (B, F, D),
feat_lengths (B,))`` (normalisation and SpecAugment take and return features the same way);
frames beyond each length are zero and never enter a statistic.

Example:
    >>> import torch
    >>> from speechssl.features import Fbank, UtteranceCMVN, SpecAugment
    >>> feats, lengths = Fbank(n_mels=80)(torch.randn(2, 16000), torch.tensor([16000, 9000]))
    >>> feats, lengths = UtteranceCMVN()(feats, lengths)
    >>> feats, lengths = SpecAugment(seed=0)(feats, lengths)
    >>> feats.shape, lengths.tolist()
    (torch.Size([2, 98, 80]), [98, 54])
"""

from speechssl.features.augment import WaveformAugment
from speechssl.features.fbank import Fbank
from speechssl.features.framing import check_batch, frame_lengths, lengths_to_mask, zero_padding
from speechssl.features.logmel import LogMel
from speechssl.features.mfcc import MFCC
from speechssl.features.mixing import MixingConfig, UtteranceMixing
from speechssl.features.normalize import GlobalCMVN, UtteranceCMVN, masked_mean_variance
from speechssl.features.specaugment import SpecAugment

__all__ = [
    "MFCC",
    "Fbank",
    "GlobalCMVN",
    "LogMel",
    "MixingConfig",
    "SpecAugment",
    "UtteranceCMVN",
    "UtteranceMixing",
    "WaveformAugment",
    "check_batch",
    "frame_lengths",
    "lengths_to_mask",
    "masked_mean_variance",
    "zero_padding",
]
