"""Pre-training objectives: each returns ``(loss, metrics)`` for the Trainer."""

from speechssl.objectives.predictive_coding import (
    PredictiveCodingConfig,
    PredictiveCodingModel,
    future_frame_l1,
)

CONFIG_SCHEMAS = {"objective": {"predictive_coding": PredictiveCodingConfig}}

__all__ = ["CONFIG_SCHEMAS", "PredictiveCodingConfig", "PredictiveCodingModel", "future_frame_l1"]
