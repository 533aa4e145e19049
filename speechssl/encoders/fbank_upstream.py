"""``FbankUpstream``: the "FBANK" baseline upstream, an encoder with no learned layers.

SUPERB's FBANK row runs the same downstream head on plain filterbanks, which tells how much a
pre-trained encoder adds. This module returns ``EncoderOutput`` with one hidden state, the
log-mel filterbanks normalised per utterance to zero mean and unit variance over all valid
frames *and* bins together (padding stays zero and never enters the statistics), so
``num_layers = 0`` and ``len(hidden_states) == num_layers + 1 == 1``.

Why one mean and variance per utterance rather than per bin (CMVN): a recording's gain adds
a constant to every log-mel value, which a scalar normalisation removes, while the average
spectral shape survives. Per-bin CMVN would zero each bin's mean, and SUPERB's linear
projector + mean pooling would then see the same vector for every utterance.

Example:
    >>> import torch
    >>> upstream = FbankUpstream(n_mels=40)
    >>> out = upstream(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> out.last_hidden_state.shape, out.lengths.tolist(), len(out.hidden_states)
    (torch.Size([2, 98, 40]), [98, 48], 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from speechssl.encoders.base import Encoder, EncoderOutput, waveform_batch
from speechssl.features.fbank import Fbank
from speechssl.features.framing import lengths_to_mask

__all__ = ["FbankUpstream", "FbankUpstreamConfig", "utterance_normalize"]


@dataclass
class FbankUpstreamConfig:
    """Filterbank settings (Kaldi-compatible 25 ms / 10 ms frames)."""

    family: str = "fbank"
    n_mels: int = 80
    sample_rate: int = 16000
    normalize: bool = True


def utterance_normalize(
    feats: torch.Tensor, lengths: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its valid frames and all bins of ``(B, F, D)``.

    Padding is zero in the result and never enters the statistics.
    """
    # (B, F) -> (B, F, 1) so the mask broadcasts over D
    mask = lengths_to_mask(lengths, feats.size(1)).unsqueeze(-1).to(feats.dtype)
    # values per utterance: valid frames x bins, at least 1 so an empty row divides safely;
    # (B,) -> (B, 1, 1)
    count = (lengths.clamp(min=1) * feats.size(2)).to(feats.dtype).view(-1, 1, 1)
    mean = (feats * mask).sum(dim=(1, 2), keepdim=True) / count
    variance = ((feats - mean).pow(2) * mask).sum(dim=(1, 2), keepdim=True) / count
    return (feats - mean) / (variance + eps).sqrt() * mask


class FbankUpstream(Encoder):
    """Normalised log-mel filterbanks as a zero-layer encoder.

    Shapes:
        ``forward(wav (B, T), lengths (B,)) -> EncoderOutput`` with
        ``last_hidden_state (B, F, n_mels)``, ``hidden_states = (last_hidden_state,)``.
    """

    family = "fbank"

    def __init__(
        self,
        n_mels: int | FbankUpstreamConfig = 80,
        sample_rate: int = 16000,
        normalize: bool = True,
    ):
        # a config as first argument lets build_encoder / load_encoder rebuild it by family
        config = (
            n_mels
            if isinstance(n_mels, FbankUpstreamConfig)
            else FbankUpstreamConfig(n_mels=n_mels, sample_rate=sample_rate, normalize=normalize)
        )
        super().__init__(config)
        self.fbank = Fbank(n_mels=config.n_mels, sample_rate=config.sample_rate)

    @classmethod
    def from_config(cls, config: FbankUpstreamConfig) -> FbankUpstream:
        """Rebuild from ``spec()["config"]`` (a dataclass or a dict)."""
        values = dict(config) if isinstance(config, dict) else vars(config)
        return cls(values["n_mels"], values["sample_rate"], values["normalize"])

    @property
    def output_dim(self) -> int:
        return self.config.n_mels

    @property
    def num_layers(self) -> int:
        return 0

    def features(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel filterbanks ``(B, F, n_mels)`` and frame lengths ``(B,)``, not normalised."""
        return self.fbank(*waveform_batch(wav, lengths))

    def forward_features(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> EncoderOutput:
        if self.config.normalize:
            feats = utterance_normalize(feats, feat_lengths)
        return EncoderOutput(feats, (feats,), feat_lengths)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        return self.forward_features(*self.features(wav, lengths))
