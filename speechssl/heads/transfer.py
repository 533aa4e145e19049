"""Transfer-mode models: an encoder plus a downstream head, ready for the Trainer.

Two ways to transfer a pre-trained encoder:

* ``mode="frozen"`` (the SUPERB protocol): the encoder runs in eval mode under ``no_grad``
  and its parameters have ``requires_grad=False``; only the head (its weighted layer sum
  included) trains. ``model.train()`` keeps the encoder in eval mode, so its dropout and
  batch statistics never move.
* ``mode="finetune"``: the encoder trains too. Parameter names start with ``encoder.`` or
  ``head.``, so the Trainer gives the encoder its own (usually smaller) learning rate
  through ``optim.param_groups=[{prefix: "encoder.", lr_scale: 0.1}]``. With
  ``freeze_feature_extractor=True`` the encoder's convolutional waveform front end stays
  fixed, as in wav2vec 2.0 / HuBERT fine-tuning.

Both follow the Trainer contract: ``forward(batch) -> (loss, {"accuracy": ...})`` where
``batch`` has ``wav (B, T)``, ``lengths (B,)`` and ``labels (B,)``; the encoder is at
``model.encoder``.

Example:
    >>> import torch
    >>> from speechssl.heads import FbankUpstream, UtteranceClassifier
    >>> encoder = FbankUpstream(n_mels=40)
    >>> head = UtteranceClassifier(40, num_classes=4, projector_dim=16)
    >>> model = UtteranceClassificationModel(encoder, head, mode="frozen")
    >>> model.predict_proba(torch.randn(2, 8000), torch.tensor([8000, 4000])).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.heads.classifier import UtteranceClassifier
from speechssl.heads.speaker import ECAPAHead

__all__ = ["MODES", "SpeakerModel", "TransferModel", "UtteranceClassificationModel"]

MODES = ("frozen", "finetune")


class TransferModel(nn.Module):
    """Shared mode handling for an ``encoder`` + ``head`` pair (see the module docstring).

    Args:
        encoder: an :class:`~speechssl.encoders.base.Encoder` (``forward(wav, lengths) ->
            EncoderOutput``, ``num_layers``).
        head: a module with ``layer_sum`` (a ``WeightedLayerSum`` or ``None``) and
            ``forward(hidden_states, lengths)``. With a layer sum it reads all
            ``encoder.num_layers + 1`` hidden states; without one, ``last_hidden_state``.
        mode: ``"frozen"`` or ``"finetune"``.
        freeze_feature_extractor: in finetune mode, keep the encoder's convolutional
            front end fixed (encoders without one have nothing to freeze).
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        mode: str = "frozen",
        freeze_feature_extractor: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        layer_sum = head.layer_sum
        expected = encoder.num_layers + 1
        if layer_sum is not None and layer_sum.num_layers != expected:
            raise ValueError(
                f"the head mixes {layer_sum.num_layers} hidden states but the encoder returns "
                f"{expected} (num_layers + 1): build the head with num_layers={expected}"
            )
        self.encoder = encoder
        self.head = head
        self.mode = mode
        self.freeze_feature_extractor = freeze_feature_extractor
        if mode == "frozen":
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        elif freeze_feature_extractor:
            _freeze_front_end(self.encoder)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if self.mode == "frozen":
            # a frozen encoder is a fixed feature extractor: no dropout, no batch statistics
            self.encoder.eval()
        elif self.freeze_feature_extractor and isinstance(
            getattr(self.encoder, "front_end", None), nn.Module
        ):
            # a filterbank front end has no weights, but its global CMVN statistics would
            # drift towards the downstream data in train mode: keep pre-training's
            self.encoder.front_end.eval()
        return self

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """Run the encoder; returns ``(what the head reads, frame lengths (B,))``."""
        grad = torch.no_grad() if self.mode == "frozen" else contextlib.nullcontext()
        with grad:
            output = self.encoder(wav, lengths)
        if self.head.layer_sum is None:
            return output.last_hidden_state, output.lengths
        return output.hidden_states, output.lengths

    def layer_weights(self) -> torch.Tensor | None:
        """The head's layer-sum weights ``(num_layers + 1,)`` (for plotting), or ``None``."""
        return self.head.layer_weights()

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode and no gradients for the block; the previous mode is restored after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)


def _freeze_front_end(encoder: nn.Module) -> None:
    """Freeze the convolutional waveform front end of encoders that have one."""
    freeze = getattr(encoder, "freeze_feature_extractor", None)
    if callable(freeze):
        freeze()


def _labels(batch: Any) -> torch.Tensor:
    labels = getattr(batch, "labels", None)
    if labels is None:
        raise ValueError("this model trains on labelled batches: batch.labels is None")
    return labels


class UtteranceClassificationModel(TransferModel):
    """Encoder + :class:`UtteranceClassifier` trained with cross-entropy.

    Shapes:
        ``forward(batch) -> (loss, {"accuracy"})``; ``logits(wav (B, T), lengths (B,)) ->
        (B, C)``; ``predict_proba(wav, lengths) -> (B, C)`` rows summing to 1.
    """

    head: UtteranceClassifier

    def logits(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, frame_lengths = self.encode(wav, lengths)
        return self.head(hidden, frame_lengths)

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = _labels(batch)
        logits = self.logits(batch.wav, batch.lengths)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return loss, {"accuracy": accuracy.detach()}

    def predict_proba(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, C)``, computed in eval mode without gradients."""
        with self.evaluating():
            return torch.softmax(self.logits(wav, lengths), dim=-1)


class SpeakerModel(TransferModel):
    """Encoder + :class:`ECAPAHead` trained with AAM softmax; ``embed`` gives speaker vectors.

    Shapes:
        ``forward(batch) -> (loss, {"accuracy"})`` (accuracy of the margin-free cosine
        scores); ``scores(wav, lengths) -> (B, num_speakers)`` cosine similarities;
        ``embed(wav, lengths) -> (B, embedding_dim)``.
    """

    head: ECAPAHead

    def scores(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, frame_lengths = self.encode(wav, lengths)
        return self.head(hidden, frame_lengths)

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        labels = _labels(batch)
        if self.training and len(labels) < 2:
            raise ValueError(
                "ECAPA's batch norm needs >= 2 utterances per training batch: raise "
                "data.max_batch_seconds or lower data.max_duration (the training crop)"
            )
        cosine = self.scores(batch.wav, batch.lengths)
        loss = self.head.loss(cosine, labels)
        accuracy = (cosine.argmax(dim=-1) == labels).float().mean()
        return loss, {"accuracy": accuracy.detach()}

    def embed(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Speaker embeddings ``(B, embedding_dim)``, in eval mode without gradients."""
        with self.evaluating():
            hidden, frame_lengths = self.encode(wav, lengths)
            return self.head.embed(hidden, frame_lengths)

    def predict_proba(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Speaker posteriors ``(B, num_speakers)``: softmax of the AAM-scaled cosines."""
        with self.evaluating():
            cosine = self.scores(wav, lengths)
            return torch.softmax(self.head.criterion.loss_fn.scale * cosine, dim=-1)
