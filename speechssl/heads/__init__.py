"""Downstream heads and transfer-mode models.

* :class:`WeightedLayerSum` — SUPERB's learned softmax mix of an encoder's hidden states;
* :class:`MaskedMeanPooling`, :class:`AttentiveStatisticsPooling` — length-aware pooling;
* :class:`UtteranceClassifier` — projector + pooling + linear (emotion recognition);
* :class:`ECAPAHead` — SpeechBrain ECAPA-TDNN + AAM softmax (speaker identification/verification);
* :class:`FbankUpstream` — filterbank "encoder" for the FBANK baseline;
* :class:`UtteranceClassificationModel`, :class:`SpeakerModel` — encoder + head in
  ``"frozen"`` or ``"finetune"`` mode, following the Trainer contract;
* :func:`build_transfer_model` — the model of a :class:`ClassifierHeadConfig` /
  :class:`EcapaHeadConfig`.
"""

from speechssl.encoders.fbank_upstream import FbankUpstream, FbankUpstreamConfig
from speechssl.heads.classifier import UtteranceClassifier
from speechssl.heads.config import (
    HEAD_CONFIGS,
    HEADS,
    ClassifierHeadConfig,
    EcapaHeadConfig,
    build_head,
    build_transfer_model,
    head_config,
)
from speechssl.heads.layer_sum import WeightedLayerSum
from speechssl.heads.linear_probe import LinearProbe, LinearProbeConfig
from speechssl.heads.pooling import AttentiveStatisticsPooling, MaskedMeanPooling
from speechssl.heads.speaker import ECAPAHead
from speechssl.heads.transfer import SpeakerModel, TransferModel, UtteranceClassificationModel

# Hydra structured-config schemas: registered as ``head/<kind>_schema``
CONFIG_SCHEMAS = {"head": dict(HEAD_CONFIGS)}

__all__ = [
    "CONFIG_SCHEMAS",
    "HEADS",
    "HEAD_CONFIGS",
    "AttentiveStatisticsPooling",
    "ClassifierHeadConfig",
    "ECAPAHead",
    "EcapaHeadConfig",
    "FbankUpstream",
    "FbankUpstreamConfig",
    "LinearProbe",
    "LinearProbeConfig",
    "MaskedMeanPooling",
    "SpeakerModel",
    "TransferModel",
    "UtteranceClassificationModel",
    "UtteranceClassifier",
    "WeightedLayerSum",
    "build_head",
    "build_transfer_model",
    "head_config",
]
