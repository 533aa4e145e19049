"""Typed configs of the downstream heads and builders that turn them into models.

The Hydra group ``head`` has two schemas, ``classifier_schema`` (:class:`ClassifierHeadConfig`)
and ``ecapa_schema`` (:class:`EcapaHeadConfig`); ``conf/head/{mean_pool,attentive_pool,ecapa}.yaml``
extend them; :data:`HEADS` is the registry (adding a head: its config dataclass with a
``kind`` tag, a builder, and one entry there). The transfer mode lives here too because it is a property of how the head is
trained on top of the encoder.

Example:
    >>> from speechssl.heads import FbankUpstream
    >>> model = build_transfer_model(ClassifierHeadConfig(projector_dim=16), FbankUpstream(n_mels=40),
    ...                              num_classes=4)
    >>> type(model).__name__, model.mode, type(model.head).__name__
    ('UtteranceClassificationModel', 'frozen', 'UtteranceClassifier')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from speechssl.heads.classifier import UtteranceClassifier
from speechssl.heads.linear_probe import LinearProbeConfig, ProbeHead
from speechssl.heads.speaker import ECAPAHead
from speechssl.heads.transfer import SpeakerModel, TransferModel, UtteranceClassificationModel
from speechssl.typed import from_registry

__all__ = [
    "HEADS",
    "HEAD_CONFIGS",
    "ClassifierHeadConfig",
    "EcapaHeadConfig",
    "build_head",
    "build_transfer_model",
    "head_config",
]


@dataclass
class ClassifierHeadConfig:
    """Utterance classifier (SUPERB emotion-recognition downstream).

    Attributes:
        kind: schema tag, ``"classifier"``.
        mode: ``"frozen"`` (SUPERB: encoder fixed) or ``"finetune"``.
        freeze_feature_extractor: in finetune mode, keep the conv waveform front end fixed.
        use_layer_sum: mix all hidden states with learned weights (SUPERB); False reads only
            the last layer.
        layer_norm: layer-normalise each hidden state before mixing.
        projector_dim: frame-wise projection size (SUPERB: 256).
        pooling: ``"mean"`` or ``"attentive"``.
        attention_dim: attentive pooling scorer size.
        dropout: dropout on the pooled vector.
    """

    kind: str = "classifier"
    mode: str = "frozen"
    freeze_feature_extractor: bool = True
    use_layer_sum: bool = True
    layer_norm: bool = False
    projector_dim: int = 256
    pooling: str = "mean"
    attention_dim: int = 128
    dropout: float = 0.0


@dataclass
class EcapaHeadConfig:
    """ECAPA-TDNN speaker head with AAM softmax (UniSpeech-SAT / SUPERB speaker tasks).

    Attributes:
        kind: schema tag, ``"ecapa"``.
        mode, freeze_feature_extractor, use_layer_sum, layer_norm: as in
            :class:`ClassifierHeadConfig`.
        embedding_dim: speaker embedding size (ECAPA paper: 192).
        channels: ECAPA channels (SpeechBrain default 512 x 4 + 1536).
        attention_channels, se_channels, res2net_scale: ECAPA sizes (SpeechBrain defaults).
        margin, scale: AAM softmax (SpeechBrain VoxCeleb recipe: 0.2, 30).
    """

    kind: str = "ecapa"
    mode: str = "frozen"
    freeze_feature_extractor: bool = True
    use_layer_sum: bool = True
    layer_norm: bool = False
    embedding_dim: int = 192
    channels: list[int] = field(default_factory=lambda: [512, 512, 512, 512, 1536])
    attention_channels: int = 128
    se_channels: int = 128
    res2net_scale: int = 8
    margin: float = 0.2
    scale: float = 30.0


def _classifier_head(
    config: ClassifierHeadConfig, input_dim: int, num_classes: int, num_hidden_states: int
) -> nn.Module:
    num_layers = num_hidden_states if config.use_layer_sum else None
    return UtteranceClassifier(
        input_dim,
        num_classes,
        projector_dim=config.projector_dim,
        pooling=config.pooling,
        num_layers=num_layers,
        layer_norm=config.layer_norm,
        dropout=config.dropout,
        attention_dim=config.attention_dim,
    )


def _ecapa_head(
    config: EcapaHeadConfig, input_dim: int, num_classes: int, num_hidden_states: int
) -> nn.Module:
    num_layers = num_hidden_states if config.use_layer_sum else None
    return ECAPAHead(
        input_dim,
        num_classes,
        num_layers=num_layers,
        layer_norm=config.layer_norm,
        embedding_dim=config.embedding_dim,
        channels=tuple(config.channels),
        attention_channels=config.attention_channels,
        se_channels=config.se_channels,
        res2net_scale=config.res2net_scale,
        margin=config.margin,
        scale=config.scale,
    )


def _probe_head(
    config: LinearProbeConfig, input_dim: int, num_classes: int, num_hidden_states: int
) -> nn.Module:
    # an unfitted probe (zeros): the fit fills it (speechssl.tasks.classification), or a
    # saved run's state dict does (speechssl predict)
    return ProbeHead(input_dim, num_classes, num_hidden_states, config.statistics)


# head kind (its config's ``kind``) -> (config dataclass, head builder, encoder + head model)
HEADS: dict[str, tuple[type, Callable[..., nn.Module], type[TransferModel]]] = {
    "classifier": (ClassifierHeadConfig, _classifier_head, UtteranceClassificationModel),
    "ecapa": (EcapaHeadConfig, _ecapa_head, SpeakerModel),
    # the converged linear probe: fitted by L-BFGS on cached features, never by the Trainer
    "linear_probe": (LinearProbeConfig, _probe_head, UtteranceClassificationModel),
}


# every head config by kind
HEAD_CONFIGS: dict[str, type] = {kind: schema for kind, (schema, _, _) in HEADS.items()}


def head_config(config) -> ClassifierHeadConfig | EcapaHeadConfig | LinearProbeConfig:
    """The config dataclass a head's ``kind`` picks, from a DictConfig, dict or dataclass.

    Example:
        >>> head_config({"kind": "ecapa", "embedding_dim": 16}).embedding_dim
        16
    """
    return from_registry(config, HEAD_CONFIGS, tag="kind", what="head")


def build_head(config, input_dim: int, num_classes: int, num_hidden_states: int) -> nn.Module:
    """The head of ``config`` for ``num_hidden_states`` hidden states of width ``input_dim``."""
    if config.kind not in HEADS:
        raise ValueError(f"head kind must be one of {sorted(HEADS)}, got {config.kind!r}")
    return HEADS[config.kind][1](config, input_dim, num_classes, num_hidden_states)


def build_transfer_model(config, encoder: nn.Module, num_classes: int) -> TransferModel:
    """Encoder + head of ``config``: an :class:`UtteranceClassificationModel` for a classifier
    head, a :class:`SpeakerModel` for an ECAPA head."""
    head = build_head(config, encoder.output_dim, num_classes, encoder.num_layers + 1)
    model_class = HEADS[config.kind][2]
    if isinstance(config, LinearProbeConfig):
        # the probe reads frozen features only: nothing of the encoder trains
        return model_class(encoder, head, mode="frozen")
    return model_class(
        encoder, head, mode=config.mode, freeze_feature_extractor=config.freeze_feature_extractor
    )
