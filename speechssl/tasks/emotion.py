"""Emotion recognition protocol: leave-one-session-out folds and WA / UA aggregation.

IEMOCAP's standard protocol (CORPORA.md) trains five models, each tested on one session
(two speakers) and trained on the other four, and reports WA and UA as mean ± std over the
folds. A session is never on both sides of a fold, so test speakers are always unseen.

A validation set for early stopping / model selection is carved from the *training*
sessions only (:func:`validation_split`), never from the test session:

* ``strategy="session"`` holds out a whole training session: the one after the test session
  in sorted order, wrapping around (test Session1 -> validate on Session2, ...,
  Session5 -> Session1), so each session validates exactly once and validation speakers are
  unseen in training, like the test speakers.
* ``strategy="speaker_fraction"`` takes a seeded random ``fraction`` of each training
  speaker's utterances, keeping all training speakers in training (useful with few sessions).

Example:
    >>> sessions = ["S1", "S1", "S2", "S2", "S3"]
    >>> [(fold.session, fold.train.tolist(), fold.test.tolist()) for fold in loso_folds(sessions)]
    [('S1', [2, 3, 4], [0, 1]), ('S2', [0, 1, 4], [2, 3]), ('S3', [0, 1, 2, 3], [4])]
    >>> results = EmotionResults(["neu", "hap"])
    >>> results.add_fold("S1", y_true=[0, 0, 1, 1], y_pred=[0, 1, 1, 1])["wa"]
    0.75
    >>> results.add_fold("S2", y_true=[0, 1], y_pred=[0, 1])["ua"]
    1.0
    >>> summary = results.summary()
    >>> summary["wa_mean"], summary["ua_mean"], summary["confusion"]
    (0.875, 0.875, [[2, 1], [0, 3]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from speechssl.data.compact import Manifest
from speechssl.tasks.classification import TransferConfig, predict, train_classifier
from speechssl.tasks.metrics import (
    confusion_matrix,
    mean_std,
    unweighted_accuracy,
    weighted_accuracy,
)

__all__ = [
    "VALIDATION_STRATEGIES",
    "EmotionResults",
    "Fold",
    "loso_folds",
    "run_emotion_loso",
    "validation_split",
]

VALIDATION_STRATEGIES = ("session", "speaker_fraction")


class Fold(NamedTuple):
    """One leave-one-session-out fold: the held-out session and sorted row indices."""

    session: str
    train: np.ndarray
    test: np.ndarray


def _as_strings(values: Sequence, name: str) -> np.ndarray:
    values = list(values)
    if any(value is None or value == "" for value in values):
        raise ValueError(f"every utterance needs a {name}; some are missing")
    return np.asarray([str(value) for value in values])


def loso_folds(sessions: Sequence) -> list[Fold]:
    """Leave-one-session-out folds over utterances whose session is ``sessions[i]``.

    Returns one :class:`Fold` per distinct session (sorted), ``train`` holding every other
    session's rows. The test sets partition ``range(len(sessions))``.

    Raises:
        ValueError: fewer than two sessions, or a missing session.
    """
    sessions = _as_strings(sessions, "session")
    distinct = sorted(set(sessions.tolist()))
    if len(distinct) < 2:
        raise ValueError(f"leave-one-session-out needs at least 2 sessions, got {distinct}")
    folds = []
    for session in distinct:
        held_out = sessions == session
        folds.append(Fold(session, np.flatnonzero(~held_out), np.flatnonzero(held_out)))
    return folds


def validation_split(
    fold: Fold,
    sessions: Sequence,
    strategy: str = "session",
    speakers: Sequence | None = None,
    fraction: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``fold.train`` into ``(train, validation)`` row indices (see the module docstring).

    Args:
        fold: a fold from :func:`loso_folds` over the same ``sessions``.
        sessions: session of each utterance.
        strategy: ``"session"`` or ``"speaker_fraction"``.
        speakers: speaker of each utterance (needed for ``"speaker_fraction"``).
        fraction: share of each speaker's training utterances to validate on.
        seed: random seed of ``"speaker_fraction"``.
    """
    sessions = _as_strings(sessions, "session")
    if strategy == "session":
        distinct = sorted(set(sessions.tolist()))
        if len(distinct) < 3:
            raise ValueError("a held-out validation session needs at least 3 sessions")
        validation_session = distinct[(distinct.index(fold.session) + 1) % len(distinct)]
        in_validation = sessions[fold.train] == validation_session
        return fold.train[~in_validation], fold.train[in_validation]
    if strategy != "speaker_fraction":
        raise ValueError(f"strategy must be one of {VALIDATION_STRATEGIES}, got {strategy!r}")
    if speakers is None:
        raise ValueError('strategy="speaker_fraction" needs the speakers of the utterances')
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    speakers = _as_strings(speakers, "speaker")
    generator = np.random.default_rng(seed)
    chosen = []
    train_speakers = speakers[fold.train]
    for speaker in sorted(set(train_speakers.tolist())):
        rows = fold.train[train_speakers == speaker]
        # at least one utterance per speaker, never all of them
        count = min(max(1, round(fraction * rows.size)), rows.size - 1)
        chosen.append(generator.choice(rows, size=count, replace=False))
    validation = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    return np.setdiff1d(fold.train, validation), validation


class EmotionResults:
    """Collects per-fold predictions; reports per-fold and mean ± std WA/UA, summed confusion.

    Args:
        labels: class names in index order (e.g. ``["neu", "hap", "ang", "sad"]``).
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = [str(label) for label in labels]
        self.folds: list[dict] = []
        self.confusion = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)

    def add_fold(self, session: str, y_true, y_pred) -> dict:
        """Score one fold's test predictions (class indices); returns its row."""
        # via torch so lists, arrays and (CUDA) tensors all work
        y_true = torch.as_tensor(y_true).cpu().numpy().reshape(-1)
        y_pred = torch.as_tensor(y_pred).cpu().numpy().reshape(-1)
        row = {
            "session": str(session),
            "num_utterances": int(y_true.size),
            "wa": weighted_accuracy(y_true, y_pred),
            "ua": unweighted_accuracy(y_true, y_pred),
        }
        self.confusion += confusion_matrix(y_true, y_pred, num_classes=len(self.labels))
        self.folds.append(row)
        return row

    def summary(self) -> dict:
        """JSON-able dict: ``folds``, ``wa_mean``/``wa_std``/``ua_mean``/``ua_std`` over folds
        (population std), ``pooled_wa``/``pooled_ua`` from the summed confusion matrix,
        ``confusion`` (rows = true class) and ``labels``."""
        if not self.folds:
            raise ValueError("no fold has been added")
        wa_mean, wa_std = mean_std([fold["wa"] for fold in self.folds])
        ua_mean, ua_std = mean_std([fold["ua"] for fold in self.folds])
        support = self.confusion.sum(axis=1)
        present = support > 0
        recalls = np.diag(self.confusion)[present] / support[present]
        return {
            "labels": list(self.labels),
            "folds": [dict(fold) for fold in self.folds],
            "wa_mean": wa_mean,
            "wa_std": wa_std,
            "ua_mean": ua_mean,
            "ua_std": ua_std,
            "pooled_wa": float(np.trace(self.confusion) / self.confusion.sum()),
            "pooled_ua": float(recalls.mean()),
            "confusion": self.confusion.tolist(),
        }

    def to_markdown(self) -> str:
        """Per-fold table, a mean ± std row (WA/UA in %) and the summed confusion matrix."""
        summary = self.summary()
        lines = [
            "| fold (test session) | utterances | WA (%) | UA (%) |",
            "| --- | ---: | ---: | ---: |",
        ]
        for fold in summary["folds"]:
            lines.append(
                f"| {fold['session']} | {fold['num_utterances']} | "
                f"{100 * fold['wa']:.2f} | {100 * fold['ua']:.2f} |"
            )
        total = sum(fold["num_utterances"] for fold in summary["folds"])
        lines.append(
            f"| **mean ± std** | {total} | {100 * summary['wa_mean']:.2f} ± "
            f"{100 * summary['wa_std']:.2f} | {100 * summary['ua_mean']:.2f} ± "
            f"{100 * summary['ua_std']:.2f} |"
        )
        lines += ["", "Confusion matrix summed over folds (rows: true, columns: predicted):", ""]
        lines.append("| true \\ predicted | " + " | ".join(self.labels) + " |")
        lines.append("| --- |" + " ---: |" * len(self.labels))
        for label, row in zip(self.labels, summary["confusion"]):
            lines.append(f"| {label} | " + " | ".join(str(count) for count in row) + " |")
        return "\n".join(lines) + "\n"


def run_emotion_loso(
    make_encoder: Callable[[], torch.nn.Module],
    manifest: Manifest,
    labels: Sequence[str],
    head_config,
    config: TransferConfig,
    run_dir: str | Path,
    *,
    validation: str = "session",
    max_folds: int = 0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[EmotionResults, list[np.ndarray]]:
    """Leave-one-session-out emotion recognition with a fresh encoder + head per fold.

    Args:
        make_encoder: returns a new encoder for each fold (pre-trained or random weights).
        manifest: utterances with ``label`` and ``session`` columns (``speechssl prepare iemocap``).
        labels: class names in index order; rows with other labels raise (prepare drops them).
        head_config: a :class:`speechssl.heads.ClassifierHeadConfig` (frozen or finetune).
        config: training budget of each fold.
        run_dir: one sub-folder per fold (``fold_<session>``); finished folds resume at once.
        validation: how the validation set is carved from the training sessions.
        max_folds: evaluate only the first N folds (0: all), for quick runs.

    Returns:
        the fold results and, per fold, the learned layer weights (empty when the head
        reads one layer only).
    """
    if "session" not in manifest.columns:
        raise ValueError("leave-one-session-out folds need a 'session' column in the manifest")
    sessions = manifest.column("session").values()
    if any(session is None for session in sessions):
        raise ValueError("every utterance needs a session for leave-one-session-out folds")
    speakers = manifest.column("speaker").values() if "speaker" in manifest.columns else None
    results = EmotionResults(labels)
    layer_weights = []
    folds = loso_folds(sessions)
    if max_folds:
        folds = folds[:max_folds]
    for number, fold in enumerate(folds, 1):
        train_rows, valid_rows = validation_split(
            fold, sessions, strategy=validation, speakers=speakers, seed=seed
        )
        if progress is not None:
            progress(
                f"fold {number}/{len(folds)}: test session {fold.session}, "
                f"{len(train_rows)} train / {len(valid_rows)} valid / {len(fold.test)} test"
            )
        run = train_classifier(
            make_encoder(),
            head_config,
            manifest.subset(train_rows),
            manifest.subset(valid_rows),
            labels,
            config,
            Path(run_dir) / f"fold_{fold.session}",
            seed=seed,
        )
        test = predict(run.model, manifest.subset(fold.test), config, labels=labels)
        results.add_fold(fold.session, test.y_true, test.y_pred)
        weights = run.model.layer_weights()
        layer_weights.append(np.empty(0) if weights is None else weights.detach().cpu().numpy())
    return results, layer_weights
