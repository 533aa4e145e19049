"""Downstream protocols and metrics: emotion (LOSO WA/UA), speaker identification and
verification (top-1, EER/minDCF), and result plots (:mod:`speechssl.tasks.plots`)."""

from speechssl.tasks.classification import TransferConfig, predict, train_classifier
from speechssl.tasks.emotion import (
    EmotionResults,
    Fold,
    loso_folds,
    run_emotion_loso,
    validation_split,
)
from speechssl.tasks.metrics import (
    confusion_matrix,
    eer_and_mindcf,
    mean_std,
    top1_accuracy,
    unweighted_accuracy,
    weighted_accuracy,
)
from speechssl.tasks.speaker import (
    Trial,
    collect_outputs,
    identification_accuracy,
    read_trials,
    score_trials,
    verification_eer,
)
from speechssl.tasks.user_data import FinetuneDataConfig

CONFIG_SCHEMAS = {
    "transfer": {"transfer": TransferConfig},
    "data": {"finetune_data": FinetuneDataConfig},
}

__all__ = [
    "CONFIG_SCHEMAS",
    "EmotionResults",
    "Fold",
    "TransferConfig",
    "Trial",
    "collect_outputs",
    "confusion_matrix",
    "eer_and_mindcf",
    "identification_accuracy",
    "loso_folds",
    "mean_std",
    "predict",
    "read_trials",
    "run_emotion_loso",
    "score_trials",
    "top1_accuracy",
    "train_classifier",
    "unweighted_accuracy",
    "validation_split",
    "verification_eer",
    "weighted_accuracy",
]
