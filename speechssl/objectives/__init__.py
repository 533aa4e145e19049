"""Pre-training objectives: each model's ``forward(batch)`` returns ``(loss, metrics)``.

- :mod:`~speechssl.objectives.predictive_coding`: future-frame L1 (Transformer predictive
  coding, APC);
- :mod:`~speechssl.objectives.masked_prediction`: HuBERT masked prediction of k-means
  targets, with UniSpeech-SAT utterance mixing and the utterance-wise contrastive loss;
- :mod:`~speechssl.objectives.quantizer`: Gumbel vector quantiser (optional contrastive targets).
"""

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

CONFIG_SCHEMAS = {
    "objective": {
        "predictive_coding": PredictiveCodingConfig,
        "masked_prediction": MaskedPredictionConfig,
    }
}

__all__ = [
    "CONFIG_SCHEMAS",
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
    "compute_span_mask",
    "cosine_logits",
    "feature_penalty",
    "future_frame_l1",
    "sample_candidates",
    "unispeech_sat_config",
]
