"""Tacotron 2 training losses with padding masks: mel regression, stop token, guided attention.

Every loss averages over the valid cells only (frames ``< mel_lengths``, characters
``< token_lengths``), so padding never changes its value.

Example:
    >>> import torch
    >>> diagonal = torch.eye(6).unsqueeze(0)  # (B=1, T_mel=6, T_text=6)
    >>> anti_diagonal = diagonal.flip(-1)
    >>> lengths = torch.tensor([6])
    >>> float(guided_attention_loss(diagonal, lengths, lengths)) < 0.05
    True
    >>> float(guided_attention_loss(anti_diagonal, lengths, lengths)) > 0.5
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "guided_attention_loss",
    "guided_attention_weights",
    "masked_mel_loss",
    "stop_targets",
    "stop_token_loss",
]


def _mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, max_length)`` bool, True on valid positions."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def guided_attention_weights(
    mel_lengths: torch.Tensor,
    token_lengths: torch.Tensor,
    max_mel_length: int | None = None,
    max_token_length: int | None = None,
    sigma: float = 0.2,
) -> torch.Tensor:
    """Penalty matrix ``W[b, t, n] = 1 - exp(-(n / N_b - t / T_b)^2 / (2 sigma^2))``.

    Tachibana et al. (2017), "Efficiently trainable text-to-speech system based on deep
    convolutional networks with guided attention", eq. (1) with their ``g = 0.2``. ``t``
    indexes decoder frames, ``n`` characters; padded cells are 0.

    Returns:
        ``(B, T_mel, T_text)`` float32.
    """
    if sigma <= 0:
        raise ValueError(f"guided attention sigma must be positive, got {sigma}")
    max_mel_length = int(mel_lengths.max()) if max_mel_length is None else max_mel_length
    max_token_length = int(token_lengths.max()) if max_token_length is None else max_token_length
    device = mel_lengths.device
    frames = torch.arange(max_mel_length, device=device, dtype=torch.float32)
    characters = torch.arange(max_token_length, device=device, dtype=torch.float32)
    # (B, T_mel, 1) and (B, 1, T_text): relative positions along each utterance's own lengths
    frame_position = frames.view(1, -1, 1) / mel_lengths.clamp_min(1).view(-1, 1, 1).float()
    text_position = characters.view(1, 1, -1) / token_lengths.clamp_min(1).view(-1, 1, 1).float()
    weights = 1.0 - torch.exp(-((text_position - frame_position) ** 2) / (2.0 * sigma**2))
    valid = _mask(mel_lengths, max_mel_length).unsqueeze(2) & _mask(
        token_lengths, max_token_length
    ).unsqueeze(1)
    return weights * valid


def guided_attention_loss(
    alignments: torch.Tensor,
    mel_lengths: torch.Tensor,
    token_lengths: torch.Tensor,
    sigma: float = 0.2,
) -> torch.Tensor:
    """Expected penalty per decoder step, ``sum(A * W) / valid frames``, in ``[0, 1]``.

    ~0 for a diagonal alignment, near 1 far off it. Tachibana et al. and ESPnet average
    ``A * W`` over all valid cells instead, which is this value divided by the text length;
    normalising by frames only keeps the loss's scale independent of sentence length.

    Args:
        alignments: ``(B, T_mel, T_text)`` attention weights (rows sum to 1 over characters).
        mel_lengths, token_lengths: ``(B,)`` valid frames and characters.
    """
    if alignments.dim() != 3:
        raise ValueError(f"alignments must be (B, T_mel, T_text), got {tuple(alignments.shape)}")
    weights = guided_attention_weights(
        mel_lengths, token_lengths, alignments.size(1), alignments.size(2), sigma
    )
    valid_frames = mel_lengths.clamp_max(alignments.size(1)).sum().clamp_min(1)
    return (alignments * weights).sum() / valid_frames


def masked_mel_loss(
    prediction: torch.Tensor, target: torch.Tensor, mel_lengths: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """L1 or MSE between ``(B, n_mels, T)`` mels, averaged over valid frames and bins."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
        )
    if kind == "l1":
        error = (prediction - target).abs()
    elif kind == "mse":
        error = (prediction - target) ** 2
    else:
        raise ValueError(f"mel loss must be 'l1' or 'mse', got {kind!r}")
    valid = _mask(mel_lengths, target.size(2)).unsqueeze(1)  # (B, 1, T)
    return (error * valid).sum() / (valid.sum() * target.size(1)).clamp_min(1)


def stop_targets(mel_lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B, T)`` float: 1 on each utterance's last frame and after it, 0 before."""
    positions = torch.arange(max_length, device=mel_lengths.device)
    return (positions.unsqueeze(0) >= (mel_lengths - 1).unsqueeze(1)).float()


def stop_token_loss(
    stop_logits: torch.Tensor, mel_lengths: torch.Tensor, positive_weight: float = 5.0
) -> torch.Tensor:
    """Binary cross-entropy of the stop token over valid frames.

    Only one valid frame per utterance is positive (the last), so positives are weighted by
    ``positive_weight`` (ESPnet's ``bce_pos_weight``) instead of letting padding frames count
    as extra positives, which would make the loss depend on the batch's padding.
    """
    targets = stop_targets(mel_lengths, stop_logits.size(1))
    valid = _mask(mel_lengths, stop_logits.size(1))
    pos_weight = torch.tensor(positive_weight, device=stop_logits.device)
    losses = F.binary_cross_entropy_with_logits(
        stop_logits, targets, pos_weight=pos_weight, reduction="none"
    )
    return (losses * valid).sum() / valid.sum().clamp_min(1)
