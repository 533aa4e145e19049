"""HuBERT masked prediction (Hsu et al., 2021) with the UniSpeech-SAT additions (Chen et al., 2021).

waveform -> [utterance mixing] -> conv features (feature penalty) -> projection
-> span masking with a learned embedding -> Transformer -> final projection
-> cosine similarity with label embeddings / 0.1 -> cross-entropy on masked frames
(+ weighted unmasked frames) [+ utterance-wise contrastive loss on a middle layer].

The pieces are plain functions so they can be tested on tensors:

- :func:`compute_span_mask`: fairseq's ``compute_mask_indices`` (static spans) on the
  device without a Python loop: ``int(mask_prob * length / mask_length + U[0, 1))``
  spans (at least ``min_masks``) with distinct random starts, overlapping allowed, never
  over padding, and (fairseq ``require_same_masks``) every row trimmed at random to the
  smallest masked count of the batch;
- :func:`align_labels`: fairseq's ``forward_targets``: frame ``t`` takes label
  ``floor(t * label_rate / frame_rate)`` (100 Hz labels -> every other label for 50 Hz
  frames) and frames past the labels are dropped;
- :func:`cosine_logits`: one normalised matmul instead of the ``(C + 1, N, D)`` cosine of
  fairseq/torchaudio; the cross-entropy over these ``(N, C)`` logits with the label as
  target equals theirs (their column 0 holds the positive and the duplicate is -inf);
- :func:`feature_penalty`: mean squared conv feature over valid frames (fairseq/torchaudio
  average over the padded tensor; here padding never reaches a statistic).

The loss is fairseq's ``hubert_criterion`` divided by its sample size (the number of
frames with a weighted loss)::

    loss = (w_m * sum CE_masked + w_u * sum CE_unmasked) / sample_size
           + feature_penalty_weight * feature_penalty
           [+ contrastive.weight * utterance_contrastive_loss]

Besides the losses it logs what fairseq's criterion logs as ``correct_m_0 / count_m_0`` and
``correct_u_0 / count_u_0`` (``accuracy_masked``, ``accuracy_unmasked``: argmax over the
codebook against the target, averaged over label sets; the unmasked logits are computed
without gradient when ``pred_nomask_weight`` is 0), the accuracy of always predicting the
batch's most frequent label (``accuracy_masked_baseline``), and the entropy and perplexity
of the batch's labels (``label_entropy``, ``label_perplexity``): see
:mod:`speechssl.objectives.signals`.

Example:
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from speechssl.encoders import build_encoder
    >>> model = HubertPretrainModel(build_encoder("hubert_tiny"), MaskedPredictionConfig(num_classes=[20]))
    >>> wav, lengths = torch.randn(2, 16000), torch.tensor([16000, 12000])
    >>> batch = SimpleNamespace(wav=wav, lengths=lengths, frame_labels=torch.randint(0, 20, (2, 49)),
    ...                         frame_label_lengths=None)
    >>> loss, metrics = model(batch)
    >>> loss.ndim, 0.3 < float(metrics["mask_fraction"]) < 0.8
    (0, True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speechssl.features.framing import lengths_to_mask
from speechssl.features.mixing import MixingConfig, UtteranceMixing
from speechssl.objectives.signals import (
    BASELINE_SUFFIX,
    label_statistics,
    majority_accuracy,
    top1_accuracy,
)
from speechssl.objectives.utterance_contrastive import ContrastiveConfig, UtteranceContrastiveLoss

__all__ = [
    "ContrastiveConfig",
    "HubertPretrainModel",
    "MaskedPredictionConfig",
    "MixingConfig",
    "PretrainOutput",
    "align_labels",
    "compute_span_mask",
    "cosine_logits",
    "feature_penalty",
    "unispeech_sat_config",
]


@dataclass
class MaskedPredictionConfig:
    """HuBERT masked prediction (+ UniSpeech-SAT switches); fairseq names in comments.

    Defaults are HuBERT Base (fairseq ``hubert_base_librispeech.yaml``); the
    feature-extractor gradient scale (``feature_grad_mult`` 0.1) lives in the encoder
    config (``Wav2Vec2Config.feature_grad_mult``), which applies it.
    """

    name: str = "masked_prediction"
    # classes per label set: 100 k-means clusters of MFCCs (iteration 1), 500 of HuBERT
    # layer-6 features (iteration 2); one entry per label set (dictionaries)
    num_classes: list[int] = field(default_factory=lambda: [500])
    label_rate: float = 50.0  # label_rate (Hz): 100 for MFCC labels, 50 for HuBERT-feature labels
    sample_rate: int = 16000  # task.sample_rate
    mask_prob: float = 0.8  # mask_prob
    mask_length: int = 10  # mask_length
    min_masks: int = 2  # min_masks of compute_mask_indices in HubertModel.apply_mask
    same_mask_count: bool = True  # require_same_masks (fairseq default)
    logit_temperature: float = 0.1  # logit_temp
    final_dim: int = 256  # final_dim
    pred_masked_weight: float = 1.0  # criterion.pred_masked_weight
    pred_nomask_weight: float = 0.0  # criterion.pred_nomask_weight
    feature_penalty_weight: float = 10.0  # criterion.loss_weights[0] (features_pen)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def __post_init__(self) -> None:
        if not self.num_classes or any(count < 2 for count in self.num_classes):
            raise ValueError(
                f"num_classes must list at least one label set of >= 2 classes, got {self.num_classes}"
            )
        if not 0.0 <= self.mask_prob <= 1.0:
            raise ValueError(f"mask_prob must lie in [0, 1], got {self.mask_prob}")
        if self.mask_length < 1:
            raise ValueError(f"mask_length must be >= 1, got {self.mask_length}")
        if self.logit_temperature <= 0:
            raise ValueError(f"logit_temperature must be positive, got {self.logit_temperature}")


def unispeech_sat_config(**overrides) -> MaskedPredictionConfig:
    """UniSpeech-SAT Base: HuBERT Base + utterance mixing + contrastive loss on layer 6.

    Keyword overrides replace top-level fields, e.g. ``unispeech_sat_config(num_classes=[100])``.
    """
    config = MaskedPredictionConfig(
        mixing=MixingConfig(enabled=True), contrastive=ContrastiveConfig(enabled=True)
    )
    return dataclasses.replace(config, **overrides)


# ---------------------------------------------------------------------------------------
# masking, labels, logits, penalty


def _uniform(shape: tuple[int, ...], device, generator: torch.Generator | None) -> Tensor:
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def compute_span_mask(
    lengths: Tensor,
    num_frames: int,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 2,
    generator: torch.Generator | None = None,
    same_count: bool = True,
) -> Tensor:
    """Random span mask ``(B, num_frames)`` bool, True on masked frames, False on padding.

    fairseq ``compute_mask_indices`` with ``mask_type="static"``, ``no_overlap=False``:
    row ``b`` of length ``L`` gets ``max(min_masks, int(mask_prob * L / mask_length + U))``
    spans of ``mask_length`` frames starting at distinct uniform positions in
    ``[0, L - mask_length)`` (wider for short rows, as fairseq), clipped at ``L``. With
    ``same_count`` every row then keeps a random subset of its masked frames of the size
    of the smallest count in the batch (``require_same_masks``). Rows of length 0 get none.

    Args:
        lengths: (B,) valid frames per row.
        num_frames: padded length F.
        mask_prob, mask_length, min_masks: as fairseq.
        generator: random source (its device may differ from ``lengths``').
        same_count: equalise the masked count across the batch.

    Example:
        >>> mask = compute_span_mask(torch.tensor([100, 60]), 100, 0.8, 10)
        >>> bool(mask[1, 60:].any()), int(mask[0].sum()) == int(mask[1].sum())
        (False, True)
    """
    if lengths.ndim != 1:
        raise ValueError(f"expected lengths of shape (B,), got {tuple(lengths.shape)}")
    device = lengths.device
    batch_size = lengths.shape[0]
    lengths = lengths.long().clamp(min=0, max=num_frames)
    if batch_size == 0 or num_frames == 0 or mask_prob <= 0:
        return torch.zeros(batch_size, num_frames, dtype=torch.bool, device=device)
    draws = _uniform((batch_size,), device, generator)
    # fairseq: int(mask_prob * sz / float(mask_length) + np.random.rand())
    num_spans = (mask_prob * lengths / float(mask_length) + draws).long().clamp(min=min_masks)
    num_spans = torch.where(lengths > 0, num_spans, torch.zeros_like(num_spans))
    # starts are drawn in [0, sz - min_len); fairseq shortens min_len for short rows so that
    # num_mask distinct starts fit: if sz - min_len <= num_mask: min_len = sz - num_mask - 1
    start_range = lengths - mask_length
    start_range = torch.where(start_range <= num_spans, num_spans + 1, start_range).clamp(
        max=num_frames
    )
    num_spans = torch.minimum(num_spans, start_range)
    positions = torch.arange(num_frames, device=device)
    # distinct uniform starts: rank random keys of the allowed positions, keep the first n
    keys = _uniform((batch_size, num_frames), device, generator)
    keys = keys.masked_fill(positions[None, :] >= start_range[:, None], 2.0)
    ranks = keys.argsort(dim=1).argsort(dim=1)
    starts = ranks < num_spans[:, None]  # (B, F)
    # frame t is masked when a span started in (t - mask_length, t]: a difference of
    # cumulative start counts, (B, F) -> (B, F + mask_length) with leading zeros
    cumulative = F.pad(starts.long().cumsum(dim=1), (mask_length, 0))
    mask = (cumulative[:, mask_length:] - cumulative[:, :num_frames]) > 0
    mask &= positions[None, :] < lengths[:, None]
    if same_count:
        counts = mask.sum(dim=1)
        smallest = counts.masked_fill(lengths == 0, num_frames).min()
        keys = _uniform((batch_size, num_frames), device, generator).masked_fill(~mask, 2.0)
        mask &= keys.argsort(dim=1).argsort(dim=1) < smallest
    return mask


def align_labels(
    labels: Tensor,
    label_lengths: Tensor | None,
    frame_lengths: Tensor,
    num_frames: int,
    label_rate: float,
    frame_rate: float,
) -> tuple[Tensor, Tensor]:
    """Frame-aligned labels as fairseq ``HubertModel.forward_targets``.

    Frame ``t`` takes label ``floor(t * label_rate / frame_rate)``: 50 Hz labels map 1:1
    onto 50 Hz frames, 100 Hz labels (MFCC clusters) give every other label. Frames whose
    label index falls past the utterance's labels are dropped from ``frame_lengths``.

    Args:
        labels: (B, L) or (B, L, K) for K label sets, int.
        label_lengths: (B,) valid labels per row (None: all L).
        frame_lengths: (B,) valid feature frames.
        num_frames: padded feature length F.
        label_rate, frame_rate: Hz.

    Returns:
        (labels (B, F', K) int64, frame lengths (B,)) with ``F' = min(F, ceil(L / ratio))``.

    Example:
        >>> labels = torch.arange(10)[None]          # 100 Hz labels 0..9
        >>> aligned, lengths = align_labels(labels, None, torch.tensor([8]), 8, 100.0, 50.0)
        >>> aligned[0, :, 0].tolist(), lengths.tolist()  # every other label, 5 frames covered
        ([0, 2, 4, 6, 8], [5])
    """
    if labels.ndim == 2:
        labels = labels[..., None]  # (B, L) -> (B, L, 1): one label set
    if labels.ndim != 3 or labels.shape[0] != frame_lengths.shape[0]:
        raise ValueError(
            f"expected labels (B, L) or (B, L, K) for B={frame_lengths.shape[0]}, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point:
        raise ValueError(f"labels must be integer class indices, got {labels.dtype}")
    ratio = label_rate / frame_rate
    num_labels = labels.shape[1]
    if label_lengths is None:
        label_lengths = torch.full_like(frame_lengths, num_labels)
    label_lengths = label_lengths.to(frame_lengths.device)
    # frames t with floor(t * ratio) < label_length, i.e. t < label_length / ratio
    covered = torch.ceil(label_lengths.double() / ratio).long()
    usable_frames = min(num_frames, math.ceil(num_labels / ratio))
    index = (torch.arange(usable_frames, device=labels.device).double() * ratio).long()
    aligned = labels[:, index.clamp(max=max(num_labels - 1, 0))].long()  # (B, F', K)
    lengths = torch.minimum(frame_lengths, covered).clamp(max=usable_frames)
    return aligned, lengths


def cosine_logits(projected: Tensor, label_embeddings: Tensor, temperature: float = 0.1) -> Tensor:
    """(N, D) projected frames x (C, D) label embeddings -> (N, C) cosine / temperature.

    Computed in float32 with autocast off (logits divided by 0.1 lose too much in bf16).
    """
    with torch.autocast(projected.device.type, enabled=False):
        projected = F.normalize(projected.float(), dim=-1, eps=1e-8)
        embeddings = F.normalize(label_embeddings.float(), dim=-1, eps=1e-8)
        return projected @ embeddings.T / temperature


def feature_penalty(features: Tensor, frame_lengths: Tensor) -> Tensor:
    """Mean of squared conv features (B, F, C) over valid frames (fairseq ``features_pen``)."""
    valid = lengths_to_mask(frame_lengths, features.shape[1])  # (B, F)
    squared = features.float().square().sum(dim=-1)  # (B, F)
    count = valid.sum() * features.shape[-1]
    return (squared * valid).sum() / count.clamp(min=1)


# ---------------------------------------------------------------------------------------
# the model


class PretrainOutput(NamedTuple):
    """Everything one pre-training forward computes (for the loss, tests and analysis).

    Attributes:
        logits_masked: per label set, (N_m, C_k) logits of masked valid frames.
        targets_masked: per label set, (N_m,) their labels.
        logits_unmasked: per label set, (N_u, C_k) logits of unmasked valid frames (empty
            list when ``pred_nomask_weight == 0`` and not requested).
        targets_unmasked: per label set, (N_u,) their labels.
        feature_penalty: 0-dim mean squared conv feature.
        mask: (B, F) True on masked valid frames.
        frame_lengths: (B,) valid frames.
        hidden_states: the encoder's hidden states (input to layer 1 first).
    """

    logits_masked: list[Tensor]
    targets_masked: list[Tensor]
    logits_unmasked: list[Tensor]
    targets_unmasked: list[Tensor]
    feature_penalty: Tensor
    mask: Tensor
    frame_lengths: Tensor
    hidden_states: tuple[Tensor, ...]


class HubertPretrainModel(nn.Module):
    """HuBERT / UniSpeech-SAT pre-training around a wav2vec2-family encoder.

    ``forward(batch, mask=None) -> (loss, metrics)`` (the Trainer contract). ``batch`` has
    ``wav (B, T)``, ``lengths (B,)``, ``labels (B, L)`` or ``(B, L, K)`` frame targets at
    ``config.label_rate`` and optionally ``label_lengths (B,)``. ``mask`` (B, F) replaces the
    random span mask (tests, analysis).

    The encoder must offer ``extract_features``, ``project``, ``encode(mask_fn=...)`` and a
    ``mask_embedding`` (``speechssl.encoders.wav2vec2.Wav2Vec2Encoder``); it stays at
    ``model.encoder`` so checkpoints carry its spec.
    """

    def __init__(self, encoder: nn.Module, config: MaskedPredictionConfig | None = None):
        super().__init__()
        config = config if config is not None else MaskedPredictionConfig()
        self.encoder = encoder
        self.config = config
        encoder_config = encoder.config
        if encoder_config.front_end == "fbank" and encoder_config.sample_rate != config.sample_rate:
            raise ValueError(
                f"the encoder's filterbanks expect {encoder_config.sample_rate} Hz audio, the "
                f"objective's sample_rate is {config.sample_rate}"
            )
        # output frames per second: the CNN's stride at the objective's rate, or the
        # filterbank hop times the stack
        self.frame_rate = dataclasses.replace(
            encoder_config, sample_rate=config.sample_rate
        ).frame_rate
        # the feature penalty keeps the CNN's outputs small; filterbanks have no weights
        self.penalize_features = encoder_config.front_end == "conv"
        # plain ints: the config may be an OmegaConf node, whose ListConfig split() rejects
        self.num_classes = [int(count) for count in config.num_classes]
        num_sets = len(self.num_classes)
        # one final_dim slice per label set (fairseq untie_final_proj; identical for one set)
        self.final_proj = nn.Linear(encoder.output_dim, config.final_dim * num_sets)
        self.label_embeddings = nn.Parameter(torch.empty(sum(self.num_classes), config.final_dim))
        nn.init.uniform_(self.label_embeddings)  # fairseq label_embs_concat: U(0, 1)
        self.mixing = None
        if config.mixing.enabled:
            self.mixing = UtteranceMixing.from_config(config.mixing)
        self.contrastive = None
        if config.contrastive.enabled:
            if not 1 <= config.contrastive.layer <= encoder.num_layers:
                raise ValueError(
                    f"contrastive.layer must lie in [1, {encoder.num_layers}], got {config.contrastive.layer}"
                )
            self.contrastive = UtteranceContrastiveLoss.from_config(
                config.contrastive,
                encoder.output_dim,
                input_layer_norm=encoder_config.layer_norm_first,
            )

    def _check_labels(self, labels: Tensor) -> None:
        num_sets = labels.shape[-1] if labels.ndim == 3 else 1
        if labels.ndim not in (2, 3) or num_sets != len(self.num_classes):
            raise ValueError(
                f"labels must be (B, L) or (B, L, K) with K = {len(self.num_classes)} label sets, "
                f"got {tuple(labels.shape)}"
            )
        if torch.compiler.is_compiling() or labels.numel() == 0:
            return
        # one host sync: a clear message beats a device-side assert in cross_entropy
        sets = labels.reshape(-1, labels.shape[-1]) if labels.ndim == 3 else labels.reshape(-1, 1)
        low, high = sets.amin(dim=0).tolist(), sets.amax(dim=0).tolist()
        for index, count in enumerate(self.num_classes):
            if low[index] < 0 or high[index] >= count:
                raise ValueError(
                    f"labels of set {index} must lie in [0, {count}), got [{low[index]}, {high[index]}]"
                )

    def forward_logits(
        self,
        wav: Tensor,
        lengths: Tensor,
        labels: Tensor,
        label_lengths: Tensor | None = None,
        mask: Tensor | None = None,
        compute_unmasked: bool | None = None,
    ) -> PretrainOutput:
        """Waveforms (already mixed, if mixing) + labels -> :class:`PretrainOutput`.

        Masks in eval mode too (fairseq's validation loss is the masked one). The unmasked
        logits are skipped unless ``compute_unmasked`` (default: ``pred_nomask_weight > 0``);
        with weight 0 they only feed a metric, so they carry no gradient.
        """
        config = self.config
        features, frame_lengths = self.encoder.extract_features(wav, lengths)  # (B, F, C)
        labels, frame_lengths = align_labels(
            labels,
            label_lengths,
            frame_lengths,
            features.shape[1],
            config.label_rate,
            self.frame_rate,
        )
        num_frames = labels.shape[1]
        features = features[:, :num_frames]  # drop frames past the labels (fairseq trims too)
        penalty = (
            feature_penalty(features, frame_lengths)
            if self.penalize_features
            else features.new_zeros((), dtype=torch.float32)
        )
        x = self.encoder.project(features)  # (B, F, D)
        if mask is None:
            mask = compute_span_mask(
                frame_lengths,
                num_frames,
                config.mask_prob,
                config.mask_length,
                config.min_masks,
                same_count=config.same_mask_count,
            )
        elif mask.shape != (x.shape[0], num_frames):
            raise ValueError(
                f"mask must be (B, F) = {(x.shape[0], num_frames)}, got {tuple(mask.shape)}"
            )
        valid = lengths_to_mask(frame_lengths.to(x.device), num_frames)  # (B, F)
        mask = mask.to(x.device) & valid
        embedding = self.encoder.mask_embedding

        def apply_mask(frames: Tensor, padding_mask: Tensor) -> Tensor:
            # (B, F, 1) selects the learned embedding on masked frames
            return torch.where(mask[..., None], embedding.to(frames.dtype), frames)

        output = self.encoder.encode(x, frame_lengths, mask_fn=apply_mask)
        last = output.last_hidden_state  # (B, F, D)
        logits_masked, targets_masked = self._logits(last, labels, mask)
        logits_unmasked, targets_unmasked = [], []
        if compute_unmasked if compute_unmasked is not None else config.pred_nomask_weight > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and config.pred_nomask_weight > 0):
                logits_unmasked, targets_unmasked = self._logits(last, labels, valid & ~mask)
        return PretrainOutput(
            logits_masked,
            targets_masked,
            logits_unmasked,
            targets_unmasked,
            penalty,
            mask,
            frame_lengths,
            output.hidden_states,
        )

    def _logits(
        self, hidden: Tensor, labels: Tensor, selected: Tensor
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Logits and targets of the selected frames, one entry per label set."""
        # project only the selected frames: (B, F, D)[selected] -> (N, D) -> (N, final_dim * K)
        projected = self.final_proj(hidden[selected]).chunk(len(self.num_classes), dim=-1)
        embeddings = self.label_embeddings.split(self.num_classes, dim=0)
        targets = labels[selected]  # (N, K)
        logits = [
            cosine_logits(projected[k], embeddings[k], self.config.logit_temperature)
            for k in range(len(embeddings))
        ]
        return logits, [targets[:, k] for k in range(len(embeddings))]

    def _learning_signals(self, output: PretrainOutput) -> dict[str, Tensor]:
        """Accuracies, their baseline and the label entropy, each averaged over label sets."""
        signals: dict[str, list[Tensor]] = {
            "accuracy_masked": [],
            "accuracy_masked" + BASELINE_SUFFIX: [],
            "accuracy_unmasked": [],
            "label_entropy": [],
            "label_perplexity": [],
        }
        for index, num_classes in enumerate(self.num_classes):
            masked, unmasked = output.targets_masked[index], output.targets_unmasked[index]
            signals["accuracy_masked"].append(top1_accuracy(output.logits_masked[index], masked))
            signals["accuracy_masked" + BASELINE_SUFFIX].append(
                majority_accuracy(masked, num_classes)
            )
            signals["accuracy_unmasked"].append(
                top1_accuracy(output.logits_unmasked[index], unmasked)
            )
            # every valid frame's label: the masked ones and the others
            statistics = label_statistics(torch.cat([masked, unmasked]), num_classes)
            signals["label_entropy"].append(statistics["entropy"])
            signals["label_perplexity"].append(statistics["perplexity"])
        return {
            name: torch.stack([value.float() for value in values]).mean()
            for name, values in signals.items()
        }

    def forward(self, batch, mask: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Batch -> (loss: 0-dim, metrics: detached 0-dim tensors), the Trainer contract."""
        config = self.config
        wav, lengths = batch.wav, batch.lengths
        labels, label_lengths = batch.frame_labels, batch.frame_label_lengths
        if labels is None:
            raise ValueError(
                "masked prediction needs frame labels (batch.frame_labels of shape (B, L))"
            )
        self._check_labels(labels)
        metrics: dict[str, Tensor] = {}
        if self.mixing is not None and self.training:
            # targets stay the primary utterance's: only the waveform changes
            wav, mixing_info = self.mixing(wav, lengths)
            metrics["mixed_fraction"] = mixing_info.mixed.float().mean()
        # the unmasked logits always: their accuracy is a learning signal even at weight 0
        output = self.forward_logits(
            wav, lengths, labels, label_lengths, mask, compute_unmasked=True
        )
        num_masked = output.targets_masked[0].numel()
        num_unmasked = output.targets_unmasked[0].numel() if output.targets_unmasked else 0
        sample_size = 0
        weighted = output.feature_penalty.new_zeros(())
        if config.pred_masked_weight > 0:
            cross_entropy = sum(
                F.cross_entropy(logits, targets, reduction="sum")
                for logits, targets in zip(output.logits_masked, output.targets_masked)
            )
            weighted = weighted + config.pred_masked_weight * cross_entropy
            sample_size += num_masked
            metrics["loss_masked"] = cross_entropy.detach() / max(num_masked, 1)
        if config.pred_nomask_weight > 0:
            cross_entropy = sum(
                F.cross_entropy(logits, targets, reduction="sum")
                for logits, targets in zip(output.logits_unmasked, output.targets_unmasked)
            )
            weighted = weighted + config.pred_nomask_weight * cross_entropy
            sample_size += num_unmasked
            metrics["loss_unmasked"] = cross_entropy.detach() / max(num_unmasked, 1)
        loss = (
            weighted / max(sample_size, 1) + config.feature_penalty_weight * output.feature_penalty
        )
        with torch.no_grad():
            metrics.update(self._learning_signals(output))
            metrics["feature_penalty"] = output.feature_penalty.detach()
            metrics["mask_fraction"] = output.mask.sum() / output.frame_lengths.sum().clamp(min=1)
        if self.contrastive is not None:
            hidden = output.hidden_states[config.contrastive.layer]
            contrastive_loss, contrastive_metrics = self.contrastive(hidden, output.mask)
            loss = loss + config.contrastive.weight * contrastive_loss
            metrics["contrastive_loss"] = contrastive_loss.detach()
            metrics.update(contrastive_metrics)
        return loss, metrics
