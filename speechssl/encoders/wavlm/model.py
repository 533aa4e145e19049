"""The WavLM encoder: wav2vec 2.0 / HuBERT with gated relative position bias.

waveform (B, T) -> conv feature extractor -> projection -> conv position embedding ->
Transformer layers whose attention adds a bucketed relative position bias (H, F, F),
computed once before layer 1 and passed on to every layer, each layer scaling it per query
by a sigmoid gate -> (B, F, D).

Everything but attention is shared with :mod:`speechssl.encoders.wav2vec2` (the encoder
subclasses :class:`Wav2Vec2Encoder`, so HuBERT / UniSpeech-SAT pre-training runs on it
unchanged). Attention is SDPA with one float mask, the gated bias plus ``-inf`` on padded
keys, so a padded batch gives its utterances' outputs exactly.

Parameter names (torchaudio / Hugging Face / unilm):

- ``transformer.relative_position_embedding.weight`` (num_buckets, H):
  ``layers.0.attention.rel_attn_embed`` / ``relative_attention_bias``;
- ``transformer.layers.{i}.attention.gate_projection`` (8, D / H):
  ``gru_rel_pos_linear`` / ``grep_linear``;
- ``transformer.layers.{i}.attention.gate_scale`` (1, H, 1, 1):
  ``gru_rel_pos_const`` / ``grep_a``.

Example:
    >>> import torch
    >>> from speechssl.encoders.wavlm import WavLMEncoder, wavlm_tiny
    >>> encoder = WavLMEncoder(wavlm_tiny()).eval()
    >>> out = encoder(torch.randn(2, 8000), torch.tensor([8000, 4000]))
    >>> out.last_hidden_state.shape, out.lengths.tolist()
    (torch.Size([2, 24, 64]), [24, 12])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..transformer import FeedForward, SelfAttention
from ..wav2vec2.model import Wav2Vec2Encoder
from .config import WavLMConfig


def relative_position_buckets(
    num_frames: int, num_buckets: int, max_distance: int, device=None
) -> Tensor:
    """(F, F) bucket of each key offset ``key - query`` (T5 / WavLM Eq. 5, bidirectional).

    Half of the buckets hold positive offsets. Within each half, offsets below
    ``num_buckets / 4`` get a bucket each; larger ones share logarithmically wider buckets up
    to ``max_distance``, beyond which all fall in the last one.

    Example:
        >>> relative_position_buckets(3, 8, 16)
        tensor([[0, 5, 6],
                [1, 0, 5],
                [2, 1, 0]])
    """
    positions = torch.arange(num_frames, dtype=torch.long, device=device)
    offsets = positions[None, :] - positions[:, None]  # (F, F): key - query
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    # log-spaced buckets beyond max_exact; clamp(min=1) only keeps log() finite where the
    # exact branch is taken anyway
    large = (
        max_exact
        + (
            torch.log(distance.clamp(min=1).float() / max_exact)
            / math.log(max_distance / max_exact)
            * (half - max_exact)
        ).long()
    )
    large = large.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class GatedRelativeAttention(SelfAttention):
    """Self-attention with WavLM's gated relative position bias (Chen et al., 2022, Eq. 6).

    The gate of query ``i`` in head ``h`` is ``g = a * (b * c_h - 1) + 2`` with
    ``a, b = sigmoid`` of two sums of four entries of ``gate_projection(x_i,h)`` and a learned
    per-head constant ``c_h`` (``gate_scale``); the bias added to the logits is
    ``g * bias[h, i, j]``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, gated: bool = True):
        super().__init__(embed_dim, num_heads, dropout)
        self.gated = gated
        if gated:
            self.gate_projection = nn.Linear(self.head_dim, 8)
            self.gate_scale = nn.Parameter(torch.ones(1, num_heads, 1, 1))

    def forward(self, x: Tensor, position_bias: Tensor, padding_bias: Tensor) -> Tensor:
        """x (B, F, D); position_bias (H, F, F); padding_bias (B, 1, 1, F), 0 or -inf."""
        batch_size, num_frames, _ = x.shape
        # (B, F, D) -> (B, F, H, Dh) -> (B, H, F, Dh)
        shape = (batch_size, num_frames, self.num_heads, self.head_dim)
        bias = position_bias[None]  # (H, F, F) -> (1, H, F, F)
        if self.gated:
            # the gate reads the layer input, split into heads, before the projections
            # (reshape, not view: under torch.export the symbolic strides of x defeat view)
            heads = x.reshape(shape).transpose(1, 2)
            # (B, H, F, 8) -> (B, H, F, 2, 4) -> sum -> (B, H, F, 2): two gate logits
            logits = self.gate_projection(heads).reshape(*heads.shape[:3], 2, 4).sum(-1)
            gate_a, gate_b = torch.sigmoid(logits).chunk(2, dim=-1)  # each (B, H, F, 1)
            gate = gate_a * (gate_b * self.gate_scale - 1.0) + 2.0
            bias = gate * bias  # (B, H, F, 1) * (1, H, F, F) -> (B, H, F, F)
        query = self.q_proj(x).view(shape).transpose(1, 2)
        key = self.k_proj(x).view(shape).transpose(1, 2)
        value = self.v_proj(x).view(shape).transpose(1, 2)
        mask = (bias + padding_bias).to(query.dtype)
        if torch.compiler.is_exporting():
            # the same attention written out: under torch.export the CPU SDPA kernel's fake
            # output layout differs from the real one with a float mask, which breaks the
            # reshape below in the exported graph (eval only: no dropout)
            scores = query @ key.transpose(-2, -1) / math.sqrt(self.head_dim) + mask
            attended = torch.softmax(scores, dim=-1) @ value
        else:
            attended = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
            )
        # (B, H, F, Dh) -> (B, F, H, Dh) -> (B, F, D)
        attended = attended.transpose(1, 2)
        return self.out_proj(attended.reshape(batch_size, num_frames, self.embed_dim))


class WavLMLayer(nn.Module):
    """One WavLM Transformer layer: post-LN (Base) or pre-LN (Large), as
    :class:`speechssl.encoders.transformer.TransformerLayer` but with gated relative
    attention."""

    def __init__(self, config: WavLMConfig):
        super().__init__()
        dim = config.embed_dim
        self.layer_norm_first = config.layer_norm_first
        self.attention = GatedRelativeAttention(
            dim, config.num_heads, config.attention_dropout, config.gated_position_bias
        )
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(
            dim, config.ffn_dim, config.activation_dropout, config.dropout
        )
        self.final_layer_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, position_bias: Tensor, padding_bias: Tensor) -> Tensor:
        """x (B, F, D) -> (B, F, D)."""
        if self.layer_norm_first:
            attended = self.attention(self.layer_norm(x), position_bias, padding_bias)
            x = x + self.dropout(attended)
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.dropout(self.attention(x, position_bias, padding_bias)))
        return self.final_layer_norm(x + self.feed_forward(x))


class WavLMTransformer(nn.Module):
    """WavLM's layer stack; same call and outputs as
    :class:`speechssl.encoders.transformer.TransformerStack`.

    The relative position bias is computed once from ``relative_position_embedding`` and
    passed on to every layer (torchaudio and Hugging Face compute it in layer 1 and pass it
    on; the result is the same). Layer drop skips layers after the first in training, as
    Hugging Face does, and is a Python branch on ``self.training``: an eval-mode graph
    (ONNX, ``torch.export``) holds no random op.
    """

    def __init__(self, config: WavLMConfig):
        super().__init__()
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance
        self.layer_drop = config.layer_drop
        self.relative_position_embedding = nn.Embedding(config.num_buckets, config.num_heads)
        nn.init.xavier_normal_(self.relative_position_embedding.weight)  # unilm's init
        self.layers = nn.ModuleList(WavLMLayer(config) for _ in range(config.num_layers))

    def position_bias(self, num_frames: int, device) -> Tensor:
        """(H, F, F) ungated bias of every (query, key) pair."""
        buckets = relative_position_buckets(num_frames, self.num_buckets, self.max_distance, device)
        return self.relative_position_embedding(buckets).permute(2, 0, 1)  # (F, F, H) -> (H, F, F)

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor,
        attention_mask: Tensor,
        final_layer_norm: nn.Module | None = None,
        output_layer: int | None = None,
    ) -> tuple[Tensor, ...]:
        """x (B, F, D); padding_mask (B, F) True on padding; attention_mask bool
        (B, 1, 1, F) True where a key may be attended -> tuple of (B, F, D)."""
        last = len(self.layers) if output_layer is None else output_layer
        if not 0 <= last <= len(self.layers):
            raise ValueError(f"output_layer must lie in [0, {len(self.layers)}], got {last}")
        position_bias = self.position_bias(x.shape[1], x.device)
        # -inf on padded keys: their softmax weight is exactly 0
        padding_bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        padding_bias = padding_bias.masked_fill(~attention_mask, float("-inf"))
        hidden_states = [x.masked_fill(padding_mask[..., None], 0.0)]
        for index, layer in enumerate(self.layers[:last]):
            skip = (
                self.training
                and index > 0
                and self.layer_drop > 0
                and bool(torch.rand(()) < self.layer_drop)
            )
            if not skip:
                x = layer(x, position_bias, padding_bias)
            if final_layer_norm is not None and index == len(self.layers) - 1:
                x = final_layer_norm(x)
            hidden_states.append(x.masked_fill(padding_mask[..., None], 0.0))
        return tuple(hidden_states)


class WavLMEncoder(Wav2Vec2Encoder):
    """WavLM encoder: ``forward(wav (B, T), lengths (B,)) -> EncoderOutput``.

    Offers every pre-training hook of :class:`Wav2Vec2Encoder` (``extract_features``,
    ``project``, ``encode(mask_fn=...)``, ``mask_embedding``).
    """

    family = "wavlm"

    def __init__(self, config: WavLMConfig | None = None, freeze_feature_extractor: bool = False):
        super().__init__(config if config is not None else WavLMConfig(), freeze_feature_extractor)

    def build_transformer(self, config: WavLMConfig) -> nn.Module:
        return WavLMTransformer(config)
