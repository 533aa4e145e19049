"""Utterance-wise contrastive loss of UniSpeech-SAT (Chen et al., 2021, Sec. 3.1).

On the masked frames of a middle Transformer layer (layer 6 of Base), each frame is
projected (``spk_proj``) and compared by cosine similarity / temperature with

- its own target (the same projected frame, or its Gumbel-quantised version when
  ``use_quantizer``): label 1;
- ``num_negatives`` frames drawn uniformly from the masked frames of the whole batch:
  label 1 when the drawn frame comes from the same utterance (a positive), 0 when it
  comes from another utterance (a negative).

Each logit gets a binary cross-entropy, averaged over all anchors and candidates, so the
loss pulls frames of one utterance together (a speaker is constant within an utterance)
and pushes frames of different utterances apart. With the quantizer the codebook
diversity penalty of wav2vec 2.0 is added with ``diversity_weight``.

This follows the authors' code (``UniSpeech-SAT/fairseq/models/unispeech-sat/
unispeech_sat.py``: ``sample_instances``, ``compute_pred_spk``, with ``n_instances=0``,
``cross_sample_instances=100``): the anchors' own frame is excluded from the draws, but
draws are otherwise uniform over the batch, so about ``1/B`` of them are positives. Their
code reshapes the masked frames to ``(B, M, D)`` and so needs an equal mask count per row;
here frames stay a flat ``(N, D)`` list with their utterance index, so any mask works.
Padding never enters: only frames where ``frame_mask`` is True are anchors or candidates.

Its readable signal is ``contrastive_accuracy``: of the drawn same-utterance candidates,
the share scored above every other-utterance candidate of their anchor (the anchor's own
frame is left out: without the quantizer it is the anchor itself), with its chance level
``contrastive_accuracy_baseline`` (:func:`ranking_accuracy`).

Example:
    >>> import torch
    >>> loss_fn = UtteranceContrastiveLoss(input_dim=16, proj_dim=8, num_negatives=5)
    >>> hidden, frame_mask = torch.randn(3, 20, 16), torch.rand(3, 20) < 0.5
    >>> loss, metrics = loss_fn(hidden, frame_mask)
    >>> loss.ndim, sorted(metrics)[:2]
    (0, ['contrastive_accuracy', 'contrastive_accuracy_baseline'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.objectives.quantizer import GumbelVectorQuantizer
from speechssl.objectives.signals import BASELINE_SUFFIX

__all__ = ["ContrastiveConfig", "UtteranceContrastiveLoss", "ranking_accuracy", "sample_candidates"]

# anchors per chunk of the similarity matmul: bounds the (chunk, N) similarity block
_MAX_SIMILARITY_ENTRIES = 1 << 24


@dataclass
class ContrastiveConfig:
    """Utterance-wise contrastive loss (UniSpeech-SAT); fairseq names in comments."""

    enabled: bool = False  # utterance_contrastive_loss (switch for the ablation)
    layer: int = 6  # utterance_contrastive_layer (1-based Transformer layer; 6 for Base)
    weight: float = 1.0  # loss_weights entry of loss_spk_m
    proj_dim: int = 256  # width of spk_proj (fairseq uses final_dim)
    num_negatives: int = 100  # cross_sample_instances (draws from the whole batch)
    temperature: float = 0.1  # logit_temp
    use_quantizer: bool = False  # quantize_targets
    num_vars: int = 320  # latent_vars
    groups: int = 2  # latent_groups
    quantizer_temperature: list[float] = field(
        default_factory=lambda: [2.0, 0.5, 0.999995]
    )  # latent_temp
    diversity_weight: float = 0.1  # loss_weights entry of prob_perplexity (wav2vec 2.0 alpha)


def sample_candidates(
    num_frames: int, num_samples: int, device=None, generator: torch.Generator | None = None
) -> Tensor:
    """(N, K) indices into N frames, uniform, never the anchor itself (row n never holds n).

    Needs ``num_frames >= 2``.
    """
    source = generator.device if generator is not None else device
    draws = torch.randint(
        0, num_frames - 1, (num_frames, num_samples), generator=generator, device=source
    ).to(device)
    anchors = torch.arange(num_frames, device=device)[:, None]
    # draws in [0, N-2]; shifting those >= n by one skips n and keeps the draw uniform
    return draws + (draws >= anchors).long()


def ranking_accuracy(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """Share of positives scored above every negative of their anchor, and its chance level.

    Args:
        scores: (N, K) scores of each anchor's K drawn candidates.
        positive: (N, K) bool, True where the candidate is a positive (same utterance).

    Returns:
        (accuracy, chance), 0-dim: ``accuracy`` is the mean over (anchor, positive) pairs of
        "the positive scores strictly above the anchor's best negative"; ``chance`` is what
        random scores get, the mean over the same pairs of ``1 / (1 + negatives of the
        anchor)``. Both 0 when no anchor drew a positive.

    Example:
        >>> scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
        >>> positive = torch.tensor([[True, False, False], [True, False, False]])
        >>> [round(float(value), 3) for value in ranking_accuracy(scores, positive)]
        [0.5, 0.333]
    """
    negative_scores = scores.masked_fill(positive, float("-inf"))
    best_negative = negative_scores.max(dim=1, keepdim=True).values  # (N, 1)
    num_positives = positive.sum()
    if num_positives == 0:
        zero = scores.new_zeros(())
        return zero, zero
    correct = (scores > best_negative) & positive  # (N, K)
    num_negatives = (~positive).sum(dim=1, keepdim=True)  # (N, 1)
    chance = (positive / (1.0 + num_negatives)).sum()  # each pair: 1 / (1 + negatives)
    return correct.sum() / num_positives, chance / num_positives


def _gathered_cosine(anchors: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
    """cos(anchors[n], targets[indices[n, k]]) as (N, K), chunked over anchors.

    A matmul against all N targets and a gather beats gathering an (N, K, D) tensor when
    K * D is large (K = 100, D = 256): less memory traffic and one GEMM.
    """
    anchors = F.normalize(anchors, dim=-1)
    targets = F.normalize(targets, dim=-1)
    num_frames = anchors.shape[0]
    chunk = max(1, _MAX_SIMILARITY_ENTRIES // max(num_frames, 1))
    blocks = []
    for start in range(0, num_frames, chunk):
        similarity = anchors[start : start + chunk] @ targets.T  # (chunk, N)
        blocks.append(similarity.gather(1, indices[start : start + chunk]))
    return torch.cat(blocks)


class UtteranceContrastiveLoss(nn.Module):
    """``forward(hidden (B, F, D), frame_mask (B, F)) -> (loss, metrics)``.

    Args:
        input_dim: width D of the hidden states.
        proj_dim: width of the projection (``spk_proj``) and of the targets.
        num_negatives: candidates drawn per anchor from the batch (same-utterance draws
            count as positives, as in the authors' code).
        temperature: cosine similarities are divided by it.
        use_quantizer: targets are Gumbel-quantised frames projected to ``proj_dim``
            (``project_q``), and the diversity penalty is added.
        num_vars, groups, quantizer_temperature: the quantizer's codebook and temperature.
        diversity_weight: weight of the codebook diversity penalty.
        input_layer_norm: layer-normalise the frames first (fairseq's
            ``layer_norm_for_extract``, used with pre-LN encoders such as Large).
    """

    def __init__(
        self,
        input_dim: int,
        proj_dim: int = 256,
        num_negatives: int = 100,
        temperature: float = 0.1,
        use_quantizer: bool = False,
        num_vars: int = 320,
        groups: int = 2,
        quantizer_temperature: tuple[float, float, float] | list[float] = (2.0, 0.5, 0.999995),
        diversity_weight: float = 0.1,
        input_layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.num_negatives = num_negatives
        self.temperature = temperature
        self.diversity_weight = diversity_weight
        self.layer_norm = nn.LayerNorm(input_dim) if input_layer_norm else None
        self.projection = nn.Linear(input_dim, proj_dim)  # fairseq spk_proj
        self.quantizer = None
        self.target_projection = None
        if use_quantizer:
            self.quantizer = GumbelVectorQuantizer(
                input_dim, num_vars, groups, proj_dim, tuple(quantizer_temperature)
            )
            self.target_projection = nn.Linear(proj_dim, proj_dim)  # fairseq project_q

    @classmethod
    def from_config(
        cls, config: ContrastiveConfig, input_dim: int, input_layer_norm: bool = False
    ) -> UtteranceContrastiveLoss:
        return cls(
            input_dim,
            proj_dim=config.proj_dim,
            num_negatives=config.num_negatives,
            temperature=config.temperature,
            use_quantizer=config.use_quantizer,
            num_vars=config.num_vars,
            groups=config.groups,
            quantizer_temperature=tuple(config.quantizer_temperature),
            diversity_weight=config.diversity_weight,
            input_layer_norm=input_layer_norm,
        )

    def forward(
        self, hidden: Tensor, frame_mask: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """hidden (B, F, D) layer output, frame_mask (B, F) True on the (masked, valid)
        frames to use -> (loss: 0-dim, metrics: 0-dim detached tensors)."""
        if hidden.ndim != 3 or frame_mask.shape != hidden.shape[:2]:
            raise ValueError(
                f"expected hidden (B, F, D) and frame_mask (B, F), got {tuple(hidden.shape)} "
                f"and {tuple(frame_mask.shape)}"
            )
        frame_mask = frame_mask.to(device=hidden.device, dtype=torch.bool)
        # (B, F, D) -> (N, D) selected frames, with the utterance each comes from
        frames = hidden[frame_mask]
        utterance = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(
            frame_mask
        )[frame_mask]
        num_frames = frames.shape[0]
        if num_frames < 2:
            # nothing to contrast; keep every parameter in the graph for DDP
            zero = (
                sum(parameter.sum() for parameter in self.parameters()) * 0.0 + hidden.sum() * 0.0
            )
            return zero, {"contrastive_bce": zero.detach()}
        if self.layer_norm is not None:
            frames = self.layer_norm(frames)
        anchors = self.projection(frames)  # (N, P)
        metrics: dict[str, Tensor] = {}
        diversity_loss = None
        if self.quantizer is not None:
            quantized = self.quantizer(frames)
            targets = self.target_projection(quantized.quantized)
            diversity_loss = quantized.diversity_loss
            metrics["prob_perplexity"] = quantized.prob_perplexity.detach()
            metrics["code_perplexity"] = quantized.code_perplexity.detach()
            metrics["quantizer_temperature"] = quantized.temperature.detach()
            metrics["diversity_loss"] = diversity_loss.detach()
        else:
            targets = anchors
        indices = sample_candidates(
            num_frames, self.num_negatives, hidden.device, generator
        )  # (N, K)
        labels = torch.cat(
            [
                torch.ones(num_frames, 1, device=hidden.device),
                (utterance[indices] == utterance[:, None]).float(),  # (N, K) same utterance
            ],
            dim=1,
        )  # (N, 1 + K)
        # cosine logits in float32 even under autocast: they are divided by 0.1
        with torch.autocast(hidden.device.type, enabled=False):
            anchors, targets = anchors.float(), targets.float()
            own = F.cosine_similarity(anchors, targets, dim=-1)[:, None]  # (N, 1)
            drawn = _gathered_cosine(anchors, targets, indices)  # (N, K)
            logits = torch.cat([own, drawn], dim=1) / self.temperature
            bce = F.binary_cross_entropy_with_logits(logits, labels)
        loss = bce
        if diversity_loss is not None:
            loss = loss + self.diversity_weight * diversity_loss
        with torch.no_grad():
            metrics["contrastive_bce"] = bce.detach()
            # the binary decisions the loss trains (mostly negatives: ~1 - 1/B of the draws)
            metrics["contrastive_binary_accuracy"] = (
                ((logits >= 0).float() == labels).float().mean()
            )
            metrics["contrastive_positive_fraction"] = labels.mean()
            accuracy, chance = ranking_accuracy(drawn, labels[:, 1:].bool())
            metrics["contrastive_accuracy"] = accuracy
            metrics["contrastive_accuracy" + BASELINE_SUFFIX] = chance
        return loss, metrics
