"""Length bookkeeping and input checks shared by every batched feature transform.

Every transform in :mod:`speechssl.features` takes ``(wav (B, T), lengths (B,))`` and returns
``(feats (B, F, D), feat_lengths (B,))``; these helpers turn sample counts into frame counts,
build padding masks and reject malformed batches with a one-line ``ValueError``.

Example:
    >>> import torch
    >>> frame_lengths(torch.tensor([16000, 399, 400]), win_length=400, hop_length=160)
    tensor([98,  0,  1])
    >>> lengths_to_mask(torch.tensor([1, 3]), 3)
    tensor([[ True, False, False],
            [ True,  True,  True]])
"""

from __future__ import annotations

import torch

__all__ = ["check_batch", "frame_lengths", "lengths_to_mask", "zero_padding"]


def frame_lengths(
    num_samples: torch.Tensor, win_length: int, hop_length: int, snip_edges: bool = True
) -> torch.Tensor:
    """Number of frames for each row of ``num_samples`` (any integer shape).

    ``snip_edges=True`` is Kaldi's rule: only frames that fit entirely, ``1 + (T - win) // hop``
    (0 when ``T < win``). ``snip_edges=False`` is the centred rule of ``torch.stft(center=True)``
    and librosa: ``1 + T // hop``.
    """
    num_samples = torch.as_tensor(num_samples)
    if snip_edges:
        fitted = torch.div(num_samples - win_length, hop_length, rounding_mode="floor") + 1
        return torch.where(num_samples >= win_length, fitted, torch.zeros_like(fitted))
    return torch.div(num_samples, hop_length, rounding_mode="floor") + 1


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Padding mask ``(B, max_len)``: True at valid positions, False at padding."""
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_len, device=lengths.device)
    # (1, max_len) < (B, 1) -> (B, max_len)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def zero_padding(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero every step at or beyond each row's length along dim 1 of ``(B, F, ...)``."""
    mask = lengths_to_mask(lengths, values.size(1))
    # (B, F) -> (B, F, 1, ...) so it broadcasts over the trailing feature dims
    mask = mask.view(mask.shape + (1,) * (values.dim() - 2))
    # masked_fill rather than a product: NaN or inf in the padding must become 0 too
    return values.masked_fill(~mask, 0.0)


def check_batch(
    wav: torch.Tensor, lengths: torch.Tensor, name: str = "wav", allow_zero: bool = False
) -> torch.Tensor:
    """Validate ``(wav (B, T), lengths (B,))`` and return ``lengths`` as int64 on ``wav``'s device.

    Raises:
        ValueError: wrong dims, non-float input, lengths out of range, zero-length rows,
            or non-finite samples inside the valid region.
    """
    if not isinstance(wav, torch.Tensor) or wav.dim() != 2:
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise ValueError(f"{name} must be a (B, T) tensor, got shape {shape}")
    if not wav.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {wav.dtype}")
    lengths = torch.as_tensor(lengths, device=wav.device)
    if lengths.dim() != 1 or lengths.size(0) != wav.size(0):
        raise ValueError(
            f"lengths must have shape ({wav.size(0)},) to match {name}, got {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    lengths = lengths.long()
    # data-dependent checks: skipped while a graph is captured (torch.compile, torch.export
    # for ONNX) so the graph stays whole, as speechssl.encoders.base.check_lengths does
    if lengths.numel() and not torch.compiler.is_compiling():
        longest, shortest = int(lengths.max()), int(lengths.min())
        if longest > wav.size(1):
            raise ValueError(
                f"a length ({longest}) exceeds the padded size of {name} ({wav.size(1)})"
            )
        if shortest < 0 or (shortest == 0 and not allow_zero):
            raise ValueError(f"every row of {name} must have a positive length, got {shortest}")
        # only the valid region must be finite: padding is never read
        # fast path: a finite sum (one pass) means every sample is finite; isfinite() is 4 passes
        if not bool(torch.isfinite(wav[:, :longest].sum())):
            finite = torch.isfinite(wav[:, :longest])
            valid = lengths_to_mask(lengths, longest)
            if not bool(finite.logical_or(~valid).all()):
                raise ValueError(
                    f"{name} holds non-finite values (NaN or inf) inside its valid lengths"
                )
    return lengths
