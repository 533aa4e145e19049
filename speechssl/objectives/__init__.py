"""Pre-training objectives: each model's ``forward(batch)`` returns ``(loss, metrics)``.

- :mod:`~speechssl.objectives.predictive_coding`: future-frame L1 (Transformer predictive
  coding, APC);
- :mod:`~speechssl.objectives.masked_prediction`: HuBERT masked prediction of k-means
  targets, with UniSpeech-SAT utterance mixing and the utterance-wise contrastive loss;
- :mod:`~speechssl.objectives.quantizer`: Gumbel vector quantiser (optional contrastive targets).

Recipes build an objective by name from config, as encoders by family:

    >>> from speechssl.encoders import build_encoder  # objectives take any encoder module
    >>> config = objective_config({"name": "predictive_coding", "shifts": [1, 3]})
    >>> model = build_objective(config, build_encoder("tpc_tiny"))
    >>> type(model).__name__, sorted(model.predictors)
    ('PredictiveCodingModel', ['1', '3'])

Adding an objective: its module (a config dataclass with a ``name`` tag and a model whose
``forward(batch)`` returns ``(loss, metrics)``) and one entry in :data:`OBJECTIVES`.
"""

from collections.abc import Callable

from torch import nn

from speechssl.objectives.masked_prediction import (
    HubertPretrainModel,
    MaskedPredictionConfig,
    PretrainOutput,
    align_labels,
    compute_span_mask,
    cosine_logits,
    feature_penalty,
    unispeech_sat_config,
)
from speechssl.objectives.predictive_coding import (
    PredictiveCodingConfig,
    PredictiveCodingModel,
    future_frame_l1,
)
from speechssl.objectives.quantizer import GumbelVectorQuantizer, QuantizerOutput
from speechssl.objectives.utterance_contrastive import (
    ContrastiveConfig,
    UtteranceContrastiveLoss,
    sample_candidates,
)
from speechssl.typed import from_registry


def _predictive_coding_model(config: PredictiveCodingConfig, encoder: nn.Module) -> nn.Module:
    # the targets are the encoder's own input frames (log-mel, n_mels wide)
    return PredictiveCodingModel(encoder, feature_dim=encoder.config.n_mels, config=config)


def _masked_prediction_model(config: MaskedPredictionConfig, encoder: nn.Module) -> nn.Module:
    return HubertPretrainModel(encoder, config)


# objective name (its config's ``name``) -> (config dataclass, builder(config, encoder))
OBJECTIVES: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    "predictive_coding": (PredictiveCodingConfig, _predictive_coding_model),
    "masked_prediction": (MaskedPredictionConfig, _masked_prediction_model),
}

# Hydra structured-config schemas: registered as ``objective/<name>_schema``
CONFIG_SCHEMAS = {"objective": {name: schema for name, (schema, _) in OBJECTIVES.items()}}


def objective_config(config) -> PredictiveCodingConfig | MaskedPredictionConfig:
    """The config dataclass an objective's ``name`` picks, from a DictConfig, dict or dataclass.

    Raises:
        ValueError: an unknown name or field (one line).
    """
    schemas = {name: schema for name, (schema, _) in OBJECTIVES.items()}
    return from_registry(config, schemas, tag="name", what="objective")


def build_objective(config, encoder: nn.Module) -> nn.Module:
    """The pre-training model of ``config`` (see :func:`objective_config`) around ``encoder``."""
    config = objective_config(config)
    return OBJECTIVES[config.name][1](config, encoder)


__all__ = [
    "CONFIG_SCHEMAS",
    "OBJECTIVES",
    "ContrastiveConfig",
    "GumbelVectorQuantizer",
    "HubertPretrainModel",
    "MaskedPredictionConfig",
    "PredictiveCodingConfig",
    "PredictiveCodingModel",
    "PretrainOutput",
    "QuantizerOutput",
    "UtteranceContrastiveLoss",
    "align_labels",
    "build_objective",
    "compute_span_mask",
    "cosine_logits",
    "feature_penalty",
    "future_frame_l1",
    "objective_config",
    "sample_candidates",
    "unispeech_sat_config",
]
