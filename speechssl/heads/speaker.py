"""Speaker head: weighted layer sum -> SpeechBrain ECAPA-TDNN -> cosine classifier + AAM.

The speaker downstream of UniSpeech-SAT (Chen et al., 2021) and SUPERB-SV: the ECAPA-TDNN
(Desplanques et al., 2020) reads the weighted sum of the frozen or fine-tuned encoder's
hidden states instead of filterbanks, is trained with additive angular margin (AAM)
softmax over a cosine classifier, and its 192-dim output is the speaker embedding scored
by cosine similarity for verification.

Everything model-side is SpeechBrain's (``ECAPA_TDNN``, ``Classifier``,
``LogSoftmaxWrapper(AdditiveAngularMargin)``); this module converts between our
``(frames (B, F, D), frame lengths (B,))`` convention and SpeechBrain's relative lengths.

Example:
    >>> import torch
    >>> head = ECAPAHead(input_dim=8, num_speakers=5, num_layers=2, channels=(32, 32, 32, 32, 96),
    ...                  attention_channels=16, se_channels=16, res2net_scale=4, embedding_dim=16)
    >>> hidden_states = [torch.randn(3, 20, 8) for _ in range(2)]
    >>> lengths = torch.tensor([20, 12, 7])
    >>> head.embed(hidden_states, lengths).shape
    torch.Size([3, 16])
    >>> cosine = head(hidden_states, lengths)  # (B, num_speakers) cosine similarities
    >>> head.loss(cosine, torch.tensor([0, 1, 4])).ndim
    0
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
from torch import nn

from speechssl.features.framing import zero_padding
from speechssl.heads.layer_sum import WeightedLayerSum, mix_layers
from speechssl.heads.pooling import check_frames

__all__ = ["ECAPAHead", "relative_lengths"]


def relative_lengths(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """SpeechBrain's relative lengths in (0, 1] for frame counts ``lengths (B,)``.

    SpeechBrain rebuilds the mask as ``arange(F) < relative * F``. In float32,
    ``(n / F) * F`` lands just above ``n`` for about a third of all ``(n, F)`` pairs, which
    would let one padded frame into the pooling; half a frame less (``(n - 0.5) / F``)
    keeps exactly frames ``0 .. n-1`` for every ``n``.
    """
    return (lengths.float() - 0.5) / max_frames


class ECAPAHead(nn.Module):
    """ECAPA-TDNN speaker embedder with an AAM-softmax cosine classifier.

    Args:
        input_dim: feature size ``D`` of the encoder's hidden states.
        num_speakers: classes of the training set.
        num_layers: hidden states to mix with a :class:`WeightedLayerSum`
            (``None``: one ``(B, F, D)`` tensor).
        layer_norm: layer-normalise each hidden state before mixing.
        embedding_dim: speaker embedding size (ECAPA paper: 192).
        channels: ECAPA channels of the 3 SE-Res2Net blocks' input TDNN, the blocks and the
            aggregation layer (SpeechBrain default ``(512, 512, 512, 512, 1536)``).
        attention_channels, se_channels, res2net_scale: the ECAPA sizes of the same name.
        margin, scale: AAM softmax margin and scale (SpeechBrain VoxCeleb recipe: 0.2, 30).

    Padding: padded frames are zeroed and SpeechBrain's pooling masks them, so padded
    *values* never change an embedding. ECAPA's "same" convolutions still see those zeros
    at each utterance's end (and its batch norms count them in training mode), so a padded
    utterance's embedding differs slightly from the one computed alone; the effect fades
    with utterance length. Embed one utterance per batch where exact values matter.

    Shapes:
        ``embed(hidden_states, lengths (B,)) -> (B, embedding_dim)``;
        ``forward(hidden_states, lengths) -> cosine (B, num_speakers)`` (no margin applied);
        ``loss(cosine, labels (B,)) -> scalar``.
    """

    def __init__(
        self,
        input_dim: int,
        num_speakers: int,
        num_layers: int | None = None,
        layer_norm: bool = False,
        embedding_dim: int = 192,
        channels: Sequence[int] = (512, 512, 512, 512, 1536),
        attention_channels: int = 128,
        se_channels: int = 128,
        res2net_scale: int = 8,
        margin: float = 0.2,
        scale: float = 30.0,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if len(channels) != 5:
            raise ValueError(f"channels must list 5 sizes (ECAPA's 5 layers), got {channels}")
        if any(size % res2net_scale for size in channels[1:4]):
            raise ValueError(
                f"res2net_scale ({res2net_scale}) must divide the SE-Res2Net channels {channels[1:4]}"
            )
        if num_speakers < 2:
            raise ValueError(f"num_speakers must be >= 2, got {num_speakers}")
        self.num_speakers = num_speakers
        self.embedding_dim = embedding_dim
        self.layer_sum = None if num_layers is None else WeightedLayerSum(num_layers, layer_norm)
        kernel_sizes, dilations = [5, 3, 3, 3, 1], [1, 2, 3, 4, 1]
        self.ecapa = ECAPA_TDNN(
            input_dim,
            lin_neurons=embedding_dim,
            channels=channels,
            kernel_sizes=kernel_sizes,
            dilations=dilations,
            attention_channels=attention_channels,
            se_channels=se_channels,
            res2net_scale=res2net_scale,
        )
        # SpeechBrain's convolutions reflect-pad "same": the widest one needs more input
        # frames than its one-sided padding, so shorter inputs are zero-padded up to this.
        self.min_frames = max(d * (k - 1) // 2 for k, d in zip(kernel_sizes, dilations)) + 1
        self.classifier = Classifier(embedding_dim, out_neurons=num_speakers)
        self.criterion = LogSoftmaxWrapper(AdditiveAngularMargin(margin=margin, scale=scale))

    def layer_weights(self) -> torch.Tensor | None:
        """Weights of the layer sum ``(L,)``, or ``None`` without one."""
        return None if self.layer_sum is None else self.layer_sum.weights()

    def embed(
        self, hidden_states: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor
    ) -> torch.Tensor:
        """Speaker embeddings ``(B, embedding_dim)`` (not normalised)."""
        frames = mix_layers(self.layer_sum, hidden_states)
        lengths = check_frames(frames, lengths)
        # zero the padding: ECAPA's pooling masks it, but its convolutions read it at the edges
        frames = zero_padding(frames, lengths)
        if frames.size(1) < self.min_frames:
            # (B, F, D) -> (B, min_frames, D): zero frames after the end, masked like padding
            frames = F.pad(frames, (0, 0, 0, self.min_frames - frames.size(1)))
        # ECAPA returns (B, 1, E) -> (B, E)
        return self.ecapa(frames, relative_lengths(lengths, frames.size(1))).squeeze(1)

    def forward(
        self, hidden_states: torch.Tensor | Sequence[torch.Tensor], lengths: torch.Tensor
    ) -> torch.Tensor:
        embeddings = self.embed(hidden_states, lengths)
        # Classifier takes (B, 1, E) and returns (B, 1, num_speakers) -> (B, num_speakers)
        return self.classifier(embeddings.unsqueeze(1)).squeeze(1)

    def loss(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """AAM-softmax cross-entropy (mean over the batch) of ``cosine (B, num_speakers)``."""
        # LogSoftmaxWrapper wants (B, 1, C) outputs and (B, 1) targets
        return self.criterion(cosine.unsqueeze(1), labels.view(-1, 1))
