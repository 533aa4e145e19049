"""Predictive coding: predict future filterbank frames from a causal encoder.

Lian et al. (2018), "Improving speech emotion recognition via Transformer-based
Predictive Coding through transfer learning": a causal Transformer reads log-mel frames
``x_1..x_t`` and predicts ``x_{t+n}``; APC (Chung et al., 2019) is the same objective
with a GRU stack (n = 5 there, n = 3 by default here as in the TPC recipe).

The loss is L1 over the valid frames only: for a shift ``n`` an utterance of ``F``
frames contributes ``F - n`` predictions, and padding never enters the mean.

A falling L1 alone says little: copying frame ``t`` as the prediction of frame ``t + n``
already scores well on slowly changing filterbanks. Each shift therefore logs
``l1_shift<n>`` (the model), ``l1_shift<n>_baseline`` (:func:`copy_last_frame_l1`, the
copy on exactly the frames the model predicts, from the same normalised features) and
``l1_shift<n>_ratio`` (model / baseline, below 1 once the model beats the copy).

Example:
    >>> import torch
    >>> from speechssl.objectives.predictive_coding import future_frame_l1
    >>> feats = torch.randn(2, 10, 4); lengths = torch.tensor([10, 6])
    >>> prediction = feats[:, 3:]            # a perfect predictor for shift 3 ...
    >>> loss, count = future_frame_l1(torch.cat([prediction, torch.zeros(2, 3, 4)], 1), feats, lengths, 3)
    >>> float(loss), int(count)              # ... has zero loss over (10-3)+(6-3) frames
    (0.0, 10)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from speechssl.features.framing import lengths_to_mask
from speechssl.objectives.signals import BASELINE_SUFFIX


@dataclass
class PredictiveCodingConfig:
    """Hyperparameters of the predictive-coding objective."""

    name: str = "predictive_coding"
    # frames ahead to predict; Lian et al. predict the next frame(s), APC uses n = 5
    shifts: list[int] = field(default_factory=lambda: [3])
    # masked-span variant: zero random input spans (prob per start frame, span length)
    # before encoding; the targets stay the clean future frames
    mask_prob: float = 0.0
    mask_length: int = 7


def future_frame_l1(
    predictions: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, shift: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean L1 between ``predictions[:, t]`` and ``targets[:, t + shift]`` over valid t.

    Args:
        predictions: ``(B, F, D)``, the prediction made at frame t for frame t + shift.
        targets: ``(B, F, D)`` input features (the future frames are read from here).
        lengths: ``(B,)`` valid frames per utterance.
        shift: frames ahead, ``>= 1``.

    Returns:
        (mean loss over valid (frame, dim) entries, number of valid frames).
    """
    if shift < 1:
        raise ValueError(f"shift must be >= 1, got {shift}")
    num_frames = targets.shape[1]
    if num_frames <= shift:
        zero = predictions.sum() * 0.0  # keeps the graph connected for DDP
        return zero, torch.zeros((), dtype=torch.long, device=targets.device)
    source = predictions[:, : num_frames - shift]  # (B, F - n, D): made at t
    future = targets[:, shift:]  # (B, F - n, D): frame t + n
    positions = torch.arange(num_frames - shift, device=targets.device)
    valid = positions[None, :] < (lengths[:, None] - shift)  # (B, F - n)
    count = valid.sum()
    error = (source - future).abs().mean(dim=-1)  # (B, F - n)
    loss = (error * valid).sum() / count.clamp(min=1)
    return loss, count


def copy_last_frame_l1(
    targets: torch.Tensor, lengths: torch.Tensor, shift: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 of the copy-last-frame baseline: frame ``t`` predicts frame ``t + shift``.

    :func:`future_frame_l1` with the features themselves as the predictions, so the mean
    runs over exactly the (frame, dim) entries the model's loss runs over. The copy reads
    the clean features even when the masked-span variant zeroes the model's input: the
    baseline is the strongest copy, not one of masked zeros.

    Example:
        >>> feats = torch.tensor([[[0.0], [1.0], [3.0], [9.0]]])  # one utterance, 4 frames
        >>> loss, count = copy_last_frame_l1(feats, torch.tensor([3]), 1)
        >>> float(loss), int(count)  # |1 - 0| and |3 - 1| over the 2 predicted frames
        (1.5, 2)
    """
    with torch.no_grad():
        return future_frame_l1(targets, targets, lengths, shift)


def span_mask(
    lengths: torch.Tensor,
    max_frames: int,
    mask_prob: float,
    mask_length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random spans of ``mask_length`` frames, started with probability ``mask_prob``.

    Returns a ``(B, F)`` bool mask that is False on padding.
    """
    starts = torch.rand(len(lengths), max_frames, generator=generator) < mask_prob  # (B, F)
    # a frame is masked when a span started in the previous mask_length frames:
    # a 1-D max-pool over the start indicators does that in one op
    padded = nn.functional.pad(
        starts.float()[:, None, :], (mask_length - 1, 0)
    )  # (B, 1, F + L - 1)
    spans = nn.functional.max_pool1d(padded, kernel_size=mask_length, stride=1)[:, 0]  # (B, F)
    valid = lengths_to_mask(lengths.cpu(), max_frames)  # (B, F)
    return (spans > 0) & valid


class PredictiveCodingModel(nn.Module):
    """Encoder + one linear predictor per shift, trained with future-frame L1.

    The encoder must be causal (e.g. ``speechssl.encoders`` predictive family) and
    expose ``features(wav, lengths)`` and ``forward_features(feats, lengths)``.
    ``forward(batch)`` follows the Trainer contract: ``(loss, metrics)``; the metrics are
    ``l1_shift<n>``, ``l1_shift<n>_baseline`` and ``l1_shift<n>_ratio`` per shift (see
    :mod:`speechssl.objectives.signals`).
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, config: PredictiveCodingConfig):
        super().__init__()
        if not config.shifts:
            raise ValueError("predictive coding needs at least one shift")
        self.encoder = encoder
        self.config = config
        self.predictors = nn.ModuleDict(
            {str(shift): nn.Linear(encoder.output_dim, feature_dim) for shift in config.shifts}
        )

    def forward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats, feat_lengths = self.encoder.features(batch.wav, batch.lengths)  # (B, F, D)
        inputs = feats
        if self.training and self.config.mask_prob > 0:
            mask = span_mask(
                feat_lengths, feats.shape[1], self.config.mask_prob, self.config.mask_length
            )
            inputs = feats.masked_fill(mask.to(feats.device)[..., None], 0.0)
        hidden = self.encoder.forward_features(inputs, feat_lengths).last_hidden_state  # (B, F, H)
        losses, metrics = [], {}
        for shift in self.config.shifts:
            prediction = self.predictors[str(shift)](hidden)  # (B, F, H) -> (B, F, D)
            loss, _ = future_frame_l1(prediction, feats, feat_lengths, shift)
            baseline, _ = copy_last_frame_l1(feats, feat_lengths, shift)
            losses.append(loss)
            name = f"l1_shift{shift}"
            metrics[name] = loss.detach()
            metrics[name + BASELINE_SUFFIX] = baseline
            metrics[name + "_ratio"] = loss.detach() / baseline.clamp(min=1e-12)
        total = torch.stack(losses).mean()
        return total, metrics
