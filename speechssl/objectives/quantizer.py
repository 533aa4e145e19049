"""Gumbel-softmax product quantizer (wav2vec 2.0, Baevski et al., 2020, Sec. 2 and 3.2).

Each of ``groups`` codebooks holds ``num_vars`` entries of ``vq_dim / groups`` values; a
frame picks one entry per codebook (straight-through Gumbel softmax in training, argmax
in eval) and the chosen entries are concatenated. The diversity penalty
``(G V - perplexity) / (G V)`` (wav2vec 2.0 Eq. 4) pushes the averaged code distribution
towards uniform use of every entry. UniSpeech-SAT uses it, optionally, to make the
targets of its utterance-wise contrastive loss (fairseq ``quantize_targets``).

Written here (not taken from torchaudio) because torchaudio ships no quantizer.

Example:
    >>> import torch
    >>> quantizer = GumbelVectorQuantizer(input_dim=16, num_vars=8, groups=2, vq_dim=6)
    >>> out = quantizer(torch.randn(10, 16))
    >>> tuple(out.quantized.shape), 1.0 <= float(out.prob_perplexity.detach()) <= 16.0
    ((10, 6), True)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GumbelVectorQuantizer", "QuantizerOutput"]


class QuantizerOutput(NamedTuple):
    """Quantized frames and the codebook statistics of one forward pass.

    Attributes:
        quantized: (N, vq_dim) concatenated codebook entries.
        codes: (N, groups) chosen entry per codebook.
        prob_perplexity: perplexity of the softmax averaged over frames, summed over groups.
        code_perplexity: perplexity of the hard code histogram, summed over groups.
        diversity_loss: ``(G V - prob_perplexity) / (G V)``, in [0, 1).
        temperature: 0-dim Gumbel temperature used.
    """

    quantized: Tensor
    codes: Tensor
    prob_perplexity: Tensor
    code_perplexity: Tensor
    diversity_loss: Tensor
    temperature: Tensor


def _perplexity(probabilities: Tensor) -> Tensor:
    """(G, V) distributions -> sum over groups of exp(entropy) (fairseq adds 1e-7 in the log)."""
    entropy = -(probabilities * torch.log(probabilities + 1e-7)).sum(dim=-1)
    return torch.exp(entropy).sum()


class GumbelVectorQuantizer(nn.Module):
    """``(N, input_dim) -> QuantizerOutput`` with ``groups`` Gumbel-softmax codebooks.

    Args:
        input_dim: width of the frames to quantize.
        num_vars: entries per codebook (fairseq ``latent_vars``, 320).
        groups: codebooks (fairseq ``latent_groups``, 2).
        vq_dim: width of the quantized output; divisible by ``groups``.
        temperature: ``(start, end, decay)``: the Gumbel temperature is
            ``max(start * decay ** step, end)`` (fairseq ``latent_temp``, (2, 0.5, 0.999995)).
            ``step`` counts training forward passes and is saved with the state dict.
    """

    def __init__(
        self,
        input_dim: int,
        num_vars: int = 320,
        groups: int = 2,
        vq_dim: int = 256,
        temperature: tuple[float, float, float] | list[float] = (2.0, 0.5, 0.999995),
    ) -> None:
        super().__init__()
        if vq_dim % groups:
            raise ValueError(f"vq_dim {vq_dim} must be divisible by groups {groups}")
        if len(temperature) != 3:
            raise ValueError(f"temperature must be (start, end, decay), got {temperature}")
        self.num_vars = num_vars
        self.groups = groups
        self.vq_dim = vq_dim
        self.start_temperature, self.end_temperature, self.temperature_decay = (
            float(t) for t in temperature
        )
        # fairseq initialisation: codebook entries U(0, 1), logits projection N(0, 1) with zero bias
        self.codebook = nn.Parameter(torch.rand(groups * num_vars, vq_dim // groups))
        self.weight_proj = nn.Linear(input_dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self) -> Tensor:
        """0-dim tensor on the module's device (no host sync in the training step)."""
        decayed = self.start_temperature * self.temperature_decay ** self.step.double()
        return decayed.clamp(min=self.end_temperature).float()

    def extra_repr(self) -> str:
        return f"num_vars={self.num_vars}, groups={self.groups}, vq_dim={self.vq_dim}"

    def forward(self, x: Tensor) -> QuantizerOutput:
        """x (N, input_dim) -> QuantizerOutput with ``quantized`` (N, vq_dim)."""
        if x.ndim != 2:
            raise ValueError(f"expected frames of shape (N, D), got {tuple(x.shape)}")
        num_frames = x.shape[0]
        temperature = self.temperature
        # (N, D) -> (N, G * V) -> (N, G, V); statistics in float32 as fairseq does
        logits = self.weight_proj(x).float().view(num_frames, self.groups, self.num_vars)
        codes = logits.argmax(dim=-1)  # (N, G)
        hard = F.one_hot(codes, self.num_vars).to(logits.dtype)  # (N, G, V)
        code_perplexity = _perplexity(hard.mean(dim=0))
        prob_perplexity = _perplexity(logits.softmax(dim=-1).mean(dim=0))
        if self.training:
            weights = F.gumbel_softmax(logits, tau=temperature, hard=True, dim=-1)
            self.step += 1
        else:
            weights = hard
        # (N, G, V) x (G, V, d) -> (N, G, d): one entry per group ...
        codebook = self.codebook.view(self.groups, self.num_vars, -1).to(logits.dtype)
        quantized = torch.einsum("ngv,gvd->ngd", weights, codebook)
        quantized = quantized.reshape(num_frames, self.vq_dim).to(x.dtype)  # ... concatenated
        total = self.groups * self.num_vars
        diversity_loss = (total - prob_perplexity) / total
        return QuantizerOutput(
            quantized, codes, prob_perplexity, code_perplexity, diversity_loss, temperature
        )
