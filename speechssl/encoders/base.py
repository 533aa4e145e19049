"""The contract every encoder keeps: ``Encoder`` and ``EncoderOutput``.

An encoder takes a zero-padded batch of waveforms and their lengths and returns every
layer's hidden states with their frame lengths::

    >>> import torch
    >>> from speechssl.encoders import build_encoder
    >>> encoder = build_encoder("hubert_tiny").eval()
    >>> out = encoder(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    >>> out.last_hidden_state.shape, out.lengths.tolist()
    (torch.Size([2, 49, 64]), [49, 24])
    >>> len(out.hidden_states) == encoder.num_layers + 1
    True
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from speechssl.features.framing import lengths_to_mask
from speechssl.typed import to_plain


class EncoderOutput(NamedTuple):
    """What every encoder returns.

    A ``NamedTuple`` (not a dataclass) so TorchScript and ``torch.compile`` accept it.

    Attributes:
        last_hidden_state: (B, F, D) output of the last layer; frames ``>= lengths`` are zero.
        hidden_states: tuple of (B, F, D): the input to layer 1 first, then each layer's output.
        lengths: (B,) int64 number of valid frames per item.
    """

    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...]
    lengths: Tensor


def lengths_to_padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(B,) lengths -> (B, max_length) bool mask, True on *padded* frames.

    The inverse of :func:`speechssl.features.framing.lengths_to_mask` (True on valid
    frames), the one length-mask helper; kept because attention APIs take a key padding
    mask, which is True where a key must be ignored.
    """
    return ~lengths_to_mask(lengths, max_length)


def attention_mask_from_padding(padding_mask: Tensor) -> Tensor:
    """(B, F) padding mask -> (B, 1, 1, F) boolean SDPA mask, True where attention is allowed.

    An item with no valid frame would have every key masked, which makes softmax return
    NaN; such items attend to all (zeroed) frames instead and are zeroed afterwards.
    """
    allowed = ~padding_mask
    empty = ~allowed.any(dim=1, keepdim=True)  # (B, 1)
    allowed = allowed | empty
    return allowed[:, None, None, :]  # (B, F) -> (B, 1, 1, F): broadcast over heads and queries


# integer PCM -> float in [-1, 1): what soundfile.read(dtype="float32") gives for the file
_PCM_SCALE = {torch.int16: 2.0**15, torch.int32: 2.0**31}


def waveform_batch(wav, lengths=None) -> tuple[Tensor, Tensor]:
    """``(wav (B, T) float32, lengths (B,) int64)`` from what a user hands an encoder.

    The one input conversion of every encoder, so that all take the same things:
    ``wav`` may be a tensor or a NumPy array (``soundfile.read`` gives float64), float of
    any precision (float64 becomes float32; float16/bfloat16 stay as they are, for a model
    run in that precision) or int16/int32 PCM (scaled to [-1, 1)); ``lengths`` may be a
    tensor, a list, a tuple, a NumPy array or None (every item full length). Anything else
    is one ``ValueError``.

    Example:
        >>> wav, lengths = waveform_batch(torch.full((2, 4), 16384, dtype=torch.int16), [4, 2])
        >>> wav.dtype, wav[0, 0].item(), lengths.tolist()
        (torch.float32, 0.5, [4, 2])
    """
    if not isinstance(wav, Tensor):
        try:
            wav = torch.as_tensor(wav)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"expected a waveform tensor or array (B, T), got {type(wav).__name__}"
            ) from None
    if wav.dtype in _PCM_SCALE:
        wav = wav.float() / _PCM_SCALE[wav.dtype]
    elif wav.dtype == torch.float64:
        wav = wav.float()
    elif not wav.is_floating_point():
        raise ValueError(
            f"a waveform of {str(wav.dtype).replace('torch.', '')} is not audio: pass float "
            "samples in [-1, 1] or int16/int32 PCM"
        )
    if wav.ndim != 2:
        hint = " (one clip: wav[None])" if wav.ndim == 1 else ""
        raise ValueError(f"expected a waveform batch of shape (B, T), got {tuple(wav.shape)}{hint}")
    if lengths is not None and not isinstance(lengths, Tensor):
        try:
            lengths = torch.as_tensor(lengths, device=wav.device)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"expected lengths (B,) as a tensor or a list of integers, got {lengths!r}"[:200]
            ) from None
    if lengths is not None and lengths.is_floating_point():
        if not torch.compiler.is_compiling() and bool((lengths != lengths.round()).any()):
            raise ValueError(f"lengths must be whole numbers of samples, got {lengths.tolist()}")
        lengths = lengths.long()
    elif lengths is not None and (lengths.dtype == torch.bool or lengths.is_complex()):
        raise ValueError(f"lengths must be integers, got {lengths.dtype}")
    return wav, check_lengths(lengths, wav.shape[0], wav.shape[1], wav.device)


def check_waveform_batch(wav: Tensor, lengths: Tensor | None) -> Tensor:
    """Validate ``(wav (B, T), lengths (B,))`` and return int64 lengths (full length if None);
    :func:`waveform_batch` also returns the converted waveform."""
    return waveform_batch(wav, lengths)[1]


def check_lengths(lengths: Tensor | None, batch_size: int, max_length: int, device) -> Tensor:
    """Validate lengths against a (B, T, ...) batch; None means every item is full length."""
    if lengths is None:
        return torch.full((batch_size,), max_length, dtype=torch.long, device=device)
    if lengths.ndim != 1 or lengths.shape[0] != batch_size:
        raise ValueError(f"expected lengths of shape ({batch_size},), got {tuple(lengths.shape)}")
    # a data-dependent check; skipped while tracing so compiled graphs stay whole
    if not torch.compiler.is_compiling() and bool(((lengths < 0) | (lengths > max_length)).any()):
        raise ValueError(f"lengths must lie in [0, {max_length}], got {lengths.tolist()}")
    return lengths.long()


def weights_digest(module: nn.Module) -> str:
    """Hex digest of every parameter and buffer of ``module`` (names, shapes, dtypes,
    values): what a cache of its outputs is keyed by.

    Example:
        >>> layer = nn.Linear(2, 2)
        >>> before = weights_digest(layer)
        >>> _ = layer.weight.data.add_(1.0)
        >>> weights_digest(layer) == before
        False
    """
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


class Encoder(nn.Module):
    """Base class of every speechssl encoder.

    Subclasses set ``family`` (the registry name), keep their config dataclass in
    ``self.config`` and implement ``forward(wav (B, T), lengths (B,)) -> EncoderOutput``.
    """

    family: str = ""

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @property
    def output_dim(self) -> int:
        """Width D of every hidden state (``config.embed_dim`` unless a family says otherwise)."""
        return self.config.embed_dim

    @property
    def num_layers(self) -> int:
        """Number of layers; ``len(hidden_states) == num_layers + 1`` (``config.num_layers``)."""
        return self.config.num_layers

    def spec(self) -> dict:
        """``{"family", "config"}``: all ``build_encoder`` needs to rebuild this encoder."""
        return {"family": self.family, "config": to_plain(self.config)}

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"family={self.family!r}"
