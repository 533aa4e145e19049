"""The TTS pre-training study of Zhang et al. (ICASSP 2022) as reusable steps.

Grid: pre-training fraction ``f`` in {0, 1/8, 1/4, 1/2, 1} (nested seeded subsets of the
multi-speaker pool, :func:`pretraining_subsets`) -> fine-tuning on the same target data with
the same budget -> synthesis of the target speaker's held-out sentences (binned by
character n-gram TF-IDF similarity to the target *training* text) and of out-of-domain
sentences -> objective metrics per sentence -> one table per fraction x bin.

Order of the data steps matters for leakage: :func:`split_target` holds the test sentences
out first and drops every training row whose normalised text equals a test sentence; only
then does :func:`build_test_set` fit the similarity vectorizer, on the remaining training
text alone.

Steps:
    split_target          target rows -> (training rows, held-out rows)
    build_test_set        held-out + OOD sentences -> TestSentence list and the bins
    pretraining_subsets   pool rows -> {fraction: rows}, nested and seeded
    train_tts             a TacotronTTS on rows with the shared Trainer, early-stopping on a
                          dev criterion (SELECT_ON: teacher-forced loss or FreeRunningDev's)
    FreeRunningDev        the dev sentences' free-running MCD-DTW-SL / stop-length error
    finetune_model        a fine-tuning model that starts from a pre-trained checkpoint
    evaluate_model        synthesize, vocode, write WAVs, per-sentence metrics
    summarize / results_markdown / write_study_plots   the table and the plots

Example:
    >>> rows = [{"id": f"LJ{i}", "audio": f"/{i}.wav", "text": f"Sentence number {i}."}
    ...         for i in range(10)]
    >>> train, test = split_target(rows, num_test=3, seed=0)
    >>> len(train), len(test)
    (7, 3)
    >>> sentences, bins = build_test_set(train, test, ["An unrelated remark."], num_bins=2)
    >>> [sentence.bin for sentence in sentences][-1], len(bins.thresholds)
    ('ood', 1)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from speechssl import audio
from speechssl.safe_io import load_torch_file
from speechssl.stats import (
    Estimate,
    bootstrap_metric,
    excludes_zero,
    paired_bootstrap_delta,
    unpaired_bootstrap_difference,
)
from speechssl.train import distributed
from speechssl.train.checkpoint import latest_checkpoint
from speechssl.train.config import EarlyStoppingConfig, TrainerConfig
from speechssl.train.progress import read_metrics
from speechssl.train.trainer import Trainer
from speechssl.tts.data import TTSDataset, collate_tts
from speechssl.tts.metrics import (
    attention_diagonality,
    attention_focus_rate,
    f0_metrics,
    mel_cepstral_distortion_dtw,
    pitch_track,
    stop_length_error,
)
from speechssl.tts.model import TacotronConfig, TacotronTTS
from speechssl.tts.plots import plot_alignments, plot_dev_curves, plot_metric_vs_fraction
from speechssl.tts.similarity import OOD_BIN, SimilarityBins, TrainingTextSimilarity
from speechssl.tts.similarity import similarity_bins as make_bins
from speechssl.tts.subsets import nested_fractions
from speechssl.tts.text import CharacterFrontend, normalize_text
from speechssl.typed import to_dataclass

__all__ = [
    "METRICS",
    "SELECT_ON",
    "TABLE_METRICS",
    "FreeRunningDev",
    "Reference",
    "TestSentence",
    "budget_record",
    "build_study_sets",
    "build_test_set",
    "check_test_set",
    "describe_sentences",
    "dev_curve",
    "drop_texts",
    "evaluate_model",
    "finetune_model",
    "frames_per_character",
    "hold_out_dev",
    "load_references",
    "max_parameter_difference",
    "pretraining_subsets",
    "read_sentences",
    "results_markdown",
    "selection_metric",
    "sentence_estimate",
    "similarity_by_bin",
    "split_target",
    "summarize",
    "train_tts",
    "training_steps",
    "write_dev_curves_plot",
    "write_study_plots",
]

# per-sentence metrics, in table order; OOD sentences have no reference: attention and
# stop-length metrics only
METRICS = (
    "mcd_dtw_db",
    "mcd_dtw_sl_db",
    "log_f0_rmse_cents",
    "voicing_decision_error",
    "attention_focus_rate",
    "attention_diagonality",
    "stop_length_error",
)


def _key(text: str) -> str:
    """The text as the model reads it: normalised, case and spacing folded."""
    return " ".join(normalize_text(text).lower().split())


def split_target(
    rows: Sequence[Mapping], num_test: int, seed: int | str = 0, min_train: int = 1
) -> tuple[list[dict], list[dict]]:
    """Hold out ``num_test`` target sentences (seeded); the rest trains.

    Training rows whose normalised text equals a held-out sentence are dropped too (a corpus
    may read one sentence twice), so no test text is ever trained on.

    Raises:
        ValueError: fewer than ``num_test + min_train`` distinct sentences (one line: the
            target set is too small).
    """
    rows = [dict(row) for row in rows]
    texts = sorted({_key(row["text"]) for row in rows})
    if num_test < 1 or len(texts) < num_test + max(min_train, 1):
        raise ValueError(
            f"target set too small: {len(texts)} distinct sentences, need {num_test} held out "
            f"for testing + {max(min_train, 1)} to train on"
        )
    random.Random(f"{seed}:target-test").shuffle(texts)
    held_out = set(texts[:num_test])
    test, train, seen = [], [], set()
    for row in sorted(rows, key=lambda row: row["id"]):
        key = _key(row["text"])
        if key in held_out:
            if key not in seen:  # one reference recording per test sentence
                seen.add(key)
                test.append(row)
        else:
            train.append(row)
    return train, test


def hold_out_dev(
    rows: Sequence[Mapping], num_dev: int, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Split ``num_dev`` sentences (every reading of them) off the training rows: the dev set
    whose loss early-stops fine-tuning. ``num_dev`` 0 returns ``(rows, [])``.

    Example:
        >>> rows = [{"id": str(i), "text": f"Line {i}."} for i in range(5)]
        >>> train, dev = hold_out_dev(rows, 2)
        >>> len(train), len(dev)
        (3, 2)
    """
    if num_dev <= 0:
        return [dict(row) for row in rows], []
    # the same routine as the test split, under its own seed stream
    train, dev_one_each = split_target(rows, num_dev, seed=f"{seed}:dev", min_train=1)
    dev_keys = {_key(row["text"]) for row in dev_one_each}
    dev = [dict(row) for row in rows if _key(row["text"]) in dev_keys]
    return train, sorted(dev, key=lambda row: row["id"])


def drop_texts(rows: Sequence[Mapping], texts: Sequence[str]) -> tuple[list[dict], list[str]]:
    """``rows`` without those reading one of ``texts`` (normalised), and the dropped ids.

    Keeps test sentences out of the pre-training pool as well as the fine-tuning set.
    """
    banned = {_key(text) for text in texts}
    kept, dropped = [], []
    for row in rows:
        if _key(row["text"]) in banned:
            dropped.append(row["id"])
        else:
            kept.append(dict(row))
    return kept, dropped


def check_test_set(
    sentences: Sequence[TestSentence], bin_names: Sequence[str], per_bin: int, min_ood: int
) -> None:
    """Raise ``ValueError`` (one line) unless every similarity bin holds ``per_bin`` held-out
    sentences and the out-of-domain bin ``min_ood``."""
    counts = {name: 0 for name in [*bin_names, OOD_BIN]}
    for sentence in sentences:
        counts[sentence.bin] = counts.get(sentence.bin, 0) + 1
    short = {name: counts[name] for name in bin_names if counts[name] < per_bin}
    if short:
        raise ValueError(
            f"target set too small: similarity bins {short} hold fewer than test.per_bin="
            f"{per_bin} held-out sentences"
        )
    if counts[OOD_BIN] < min_ood:
        raise ValueError(
            f"too few out-of-domain sentences: {counts[OOD_BIN]} < test.min_ood={min_ood}"
        )


def training_steps(num_clips: int, batch_size: int, epochs: float, cap: int = 0) -> int:
    """Optimiser steps for ``epochs`` passes over ``num_clips`` clips at ``batch_size`` (the
    batch capped at the clips): a budget that scales with the subset. ``cap`` > 0 bounds it.

    Example:
        >>> training_steps(30, 8, 40), training_steps(4, 8, 40), training_steps(30, 8, 40, cap=4)
        (150, 40, 4)
    """
    if num_clips < 1 or batch_size < 1 or epochs <= 0:
        raise ValueError("training_steps needs num_clips >= 1, batch_size >= 1 and epochs > 0")
    steps = max(1, math.ceil(epochs * num_clips / min(batch_size, num_clips)))
    return min(steps, cap) if cap > 0 else steps


@dataclass
class TestSentence:
    """One test sentence: ``reference`` is its recording (None for out-of-domain text)."""

    __test__ = False  # not a pytest test class despite the name

    id: str
    text: str
    bin: str
    similarity: float
    reference: str | None = None

    @property
    def in_domain(self) -> bool:
        return self.reference is not None


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a text file (the out-of-domain sentences)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sentence file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_test_set(
    train_rows: Sequence[Mapping],
    test_rows: Sequence[Mapping],
    ood_sentences: Sequence[str],
    num_bins: int = 3,
    thresholds: Sequence[float] | None = None,
) -> tuple[list[TestSentence], SimilarityBins]:
    """Score every test sentence against the target *training* text and bin it.

    The vectorizer is fitted on ``train_rows`` texts only. Held-out sentences are cut into
    ``num_bins`` bins at their score quantiles (or at ``thresholds``); OOD sentences form
    the ``"ood"`` bin. Raises ``ValueError`` if a test text also occurs in training.
    """
    training_keys = {_key(row["text"]) for row in train_rows}
    leaked = [row["id"] for row in test_rows if _key(row["text"]) in training_keys]
    if leaked:
        raise ValueError(f"test sentences also in the training text: {leaked[:5]}")
    similarity = TrainingTextSimilarity([row["text"] for row in train_rows])
    texts = [row["text"] for row in test_rows] + list(ood_sentences)
    flags = [False] * len(test_rows) + [True] * len(ood_sentences)
    scores = similarity.score(texts)
    bins = make_bins(scores, num_bins=num_bins, thresholds=thresholds, out_of_domain=flags)
    sentences = [
        TestSentence(row["id"], row["text"], label, score, row["audio"])
        for row, label, score in zip(test_rows, bins.labels, scores, strict=False)
    ]
    for number, (text, score) in enumerate(
        zip(ood_sentences, scores[len(test_rows) :], strict=True)
    ):
        sentences.append(TestSentence(f"ood_{number:03d}", text, OOD_BIN, score))
    return sentences, bins


def build_study_sets(
    target_rows: Sequence[Mapping], ood_sentences: Sequence[str], test, target, seed: int = 0
) -> tuple[list[dict], list[dict], list[TestSentence], SimilarityBins]:
    """The study's target split in leakage-safe order: hold out ``test.per_bin x
    test.num_bins`` sentences first (with ``target.num_dev + target.min_train`` left, else
    one ``target set too small`` line), then ``target.num_dev`` dev sentences, then fit the
    similarity on the training text and bin; every bin must hold ``test.per_bin`` and the
    OOD bin ``test.min_ood``. Returns ``(train, dev, sentences, bins)``."""
    train, held_out = split_target(
        target_rows,
        test.per_bin * test.num_bins,
        seed=seed,
        min_train=target.num_dev + target.min_train,
    )
    train, dev = hold_out_dev(train, target.num_dev, seed)
    sentences, bins = build_test_set(
        train, held_out, ood_sentences, num_bins=test.num_bins, thresholds=test.thresholds
    )
    check_test_set(sentences, bins.names, test.per_bin, test.min_ood)
    return train, dev, sentences, bins


def pretraining_subsets(
    rows: Sequence[Mapping], fractions: Sequence[float], seed: int = 0, mode: str = "round_robin"
) -> dict[float, list[dict]]:
    """``{fraction: rows}``: nested, seeded subsets of the pre-training pool by speaker and
    utterance (see :func:`speechssl.tts.subsets.nested_fractions`); fraction 0 is empty."""
    by_id = {row["id"]: dict(row) for row in rows}
    pairs = [(row["id"], str(row.get("speaker", "unknown"))) for row in rows]
    subsets = nested_fractions(pairs, fractions=[float(f) for f in fractions], seed=seed, mode=mode)
    return {fraction: [by_id[uid] for uid in ids] for fraction, ids in subsets.items()}


def frames_per_character(rows: Sequence[Mapping], model_config: TacotronConfig) -> float:
    """Median mel frames per character (EOS included) of ``rows``: the speaking rate used to
    expect a length for sentences without a recording."""
    encoder = CharacterFrontend(normalize=model_config.normalize_text)
    rates = []
    for row in rows:
        frames = (
            1 + int(float(row["duration"]) * model_config.sample_rate) // model_config.hop_length
        )
        rates.append(frames / len(encoder.encode(row["text"])))
    if not rates:
        raise ValueError("no rows to measure the speaking rate on")
    return float(np.median(rates))


# finetune.select_on -> the dev metric fine-tuning early-stops on and keeps best.pt by
# (all lower-is-better): the teacher-forced loss, or a free-running one (FreeRunningDev)
SELECT_ON = {
    "dev_loss": "loss",
    "dev_mcd": "free_mcd_dtw_sl_db",
    "dev_stop": "free_stop_length_error",
}


def selection_metric(select_on: str) -> str:
    """The dev metric ``finetune.select_on`` names (:data:`SELECT_ON`); one line if unknown.

    Example:
        >>> selection_metric("dev_mcd")
        'free_mcd_dtw_sl_db'
    """
    if select_on not in SELECT_ON:
        raise ValueError(f"finetune.select_on={select_on!r}: expected one of {sorted(SELECT_ON)}")
    return SELECT_ON[select_on]


def budget_record(
    pretrain_epochs: float, finetune: Mapping, stages: Mapping[float, Mapping]
) -> dict:
    """``results.json: budget``: the pre-training epochs and steps run per fraction, the
    fine-tuning rule (``finetune`` config: max_steps, eval_every, patience, select_on) and
    why each fraction's fine-tuning ended (``early_stopping``: no better criterion value
    for ``patience`` evaluations; ``max_steps``: the cap)."""
    return {
        "pretrain_epochs": pretrain_epochs,
        "pretrain_steps": {
            f"{f:g}": stage["pretrain"].get("steps_run", 0) for f, stage in stages.items()
        },
        **{
            f"finetune_{key}": finetune[key]
            for key in ("max_steps", "eval_every", "patience", "select_on")
        },
        "finetune_stop_reason": {
            f"{f:g}": stage["finetune"].get("stop_reason") for f, stage in stages.items()
        },
    }


class FreeRunningDev:
    """Free-running dev criteria: synthesize the dev sentences (one seeded batch, as
    :func:`evaluate_model` does for the test set, without a vocoder) and average their
    MCD-DTW-SL and stop-length error against the dev recordings.

    The teacher-forced dev loss does not see whether the model can stop by itself: a model
    with the lowest dev loss may run every sentence to the length guard. These criteria do.

    Args:
        rows: the dev rows (``id``, ``text``, ``audio``); their recordings are loaded once.
        config: the model's :class:`TacotronConfig` (mel settings of the references).
        speaker: the target speaker id the dev sentences are synthesized for.

    Example:
        >>> dev = FreeRunningDev(dev_rows, model.config, speaker=0)  # doctest: +SKIP
        >>> dev(model)  # doctest: +SKIP
        {'free_mcd_dtw_sl_db': 9.1, 'free_stop_length_error': 1.2, 'free_stopped': 0.25}
    """

    def __init__(
        self,
        rows: Sequence[Mapping],
        config: TacotronConfig,
        speaker: int,
        *,
        seed: int = 0,
        max_length_ratio: float = 3.0,
        batch_size: int = 0,
    ) -> None:
        if not rows:
            raise ValueError("the free-running dev criterion needs dev rows")
        self.sentences = [
            TestSentence(str(row["id"]), row["text"], "dev", math.nan, row["audio"]) for row in rows
        ]
        self.references = load_references(self.sentences, config, with_f0=False)
        self.speaker = speaker
        self.seed = seed
        self.max_length_ratio = max_length_ratio
        self.batch_size = batch_size or len(rows)  # one batch by default

    def __call__(self, model: TacotronTTS) -> dict[str, float]:
        """``{"free_mcd_dtw_sl_db", "free_stop_length_error", "free_stopped"}``: means over
        the dev sentences. The caller's torch RNG and train/eval mode are left unchanged."""
        was_training = model.training
        with torch.random.fork_rng(devices=[]):  # synthesis reseeds; training's stream stays
            rows, _ = evaluate_model(
                model,
                self.speaker,
                self.sentences,
                None,  # no vocoder: MCD is on the predicted mel, stop on its length
                None,
                seed=self.seed,
                max_length_ratio=self.max_length_ratio,
                with_f0=False,
                batch_size=self.batch_size,
                references=self.references,
            )
        model.train(was_training)
        return {
            "free_mcd_dtw_sl_db": float(np.mean([row["mcd_dtw_sl_db"] for row in rows])),
            "free_stop_length_error": float(np.mean([row["stop_length_error"] for row in rows])),
            "free_stopped": float(np.mean([bool(row["stopped"]) for row in rows])),
        }


class _DevTrainer(Trainer):
    """The shared Trainer whose dev evaluation adds the free-running criteria (when
    ``free_running_dev`` is set), so that early stopping, ``best.pt``, ``metrics.jsonl``
    and ``curves.png`` all see them like the dev loss."""

    free_running_dev: FreeRunningDev | None = None

    def evaluate(self, loader) -> dict[str, float]:
        results = super().evaluate(loader)
        if self.free_running_dev is not None and loader is self.valid_loader:
            # every rank synthesizes the same seeded batch with the same weights: no reduce
            results.update(self.free_running_dev(self.model))
        return results


def dev_curve(run_dir: str | Path) -> list[dict]:
    """The dev evaluations of a Trainer folder's ``metrics.jsonl``: one ``{"step", "loss",
    ...criteria}`` row per evaluation, in step order (the last run's rows for a step)."""
    rows = {}
    for row in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if row.get("split") == "valid":
            rows[int(row["step"])] = {key: value for key, value in row.items() if key != "split"}
    return [rows[step] for step in sorted(rows)]


def _loader(rows, model: TacotronTTS, speaker_ids, default_speaker, batch_size, seed, workers):
    dataset = TTSDataset(
        rows,
        model.config.sample_rate,
        speaker_ids=speaker_ids,
        frontend=model.frontend,
        default_speaker=default_speaker,
    )
    info = distributed.get_info()
    sampler = None
    per_rank = len(dataset)
    if info.world_size > 1:
        # under torchrun each rank trains on its own share of the clips (reshuffled every
        # epoch: the Trainer calls sampler.set_epoch)
        sampler = torch.utils.data.DistributedSampler(
            dataset, info.world_size, info.rank, shuffle=True, seed=seed, drop_last=True
        )
        per_rank = len(sampler)
    # a 1/8 subset of a small pool can hold fewer clips than a batch: cap the batch there
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=max(1, min(batch_size, per_rank)),
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_tts,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
    )


def train_tts(
    model: TacotronTTS,
    rows: Sequence[Mapping],
    run_dir: str | Path,
    trainer_config,
    optim_config,
    *,
    max_steps: int,
    batch_size: int,
    speaker_ids: Mapping[str, int] | None = None,
    default_speaker: int = 0,
    full_config=None,
    seed: int = 0,
    dev_rows: Sequence[Mapping] = (),
    eval_every: int = 0,
    patience: int = 0,
    min_delta: float = 0.0,
    select_on: str = "dev_loss",
    free_running_dev: FreeRunningDev | None = None,
) -> tuple[Path, dict]:
    """Train ``model`` on ``rows`` for at most ``max_steps`` with the shared Trainer.

    With ``dev_rows`` the dev set is evaluated every ``eval_every`` steps (and at the end):
    the teacher-forced loss, plus, with ``free_running_dev``, the free-running criteria of
    :class:`FreeRunningDev` (``free_mcd_dtw_sl_db``, ``free_stop_length_error``,
    ``free_stopped``). ``select_on`` (:data:`SELECT_ON`: ``dev_loss``, ``dev_mcd``,
    ``dev_stop``) names the criterion: training stops once it has not improved by
    ``min_delta`` for ``patience`` evaluations, and ``model`` ends holding the weights best
    on it (``best.pt``, the returned checkpoint). Returns the checkpoint path and the
    Trainer's result (``stop_reason``, ``best_step``, ``best_value`` = the best criterion
    value, ``select_on``, ``criterion`` = its metric name...). A finished run directory is
    resumed (and so not trained again) by ``trainer.resume=auto``.
    """
    if not rows:
        raise ValueError("no training rows")
    criterion = selection_metric(select_on)
    if criterion != "loss" and free_running_dev is None:
        raise ValueError(f"finetune.select_on={select_on} needs the free-running dev synthesis")
    stopping = {"metric": criterion, "mode": "min", "patience": patience, "min_delta": min_delta}
    trainer_config = replace(
        to_dataclass(trainer_config, TrainerConfig),
        max_steps=max_steps,
        max_epochs=0,
        eval_every=min(eval_every, max_steps) if dev_rows else 0,
        early_stopping=to_dataclass(stopping if dev_rows else {}, EarlyStoppingConfig),
    )
    loader = _loader(
        rows, model, speaker_ids, default_speaker, batch_size, seed, trainer_config.num_workers
    )
    dev_loader = None
    if dev_rows:
        dev_set = TTSDataset(
            dev_rows,
            model.config.sample_rate,
            speaker_ids=speaker_ids,
            frontend=model.frontend,
            default_speaker=default_speaker,
        )
        dev_loader = torch.utils.data.DataLoader(
            dev_set, batch_size=max(1, min(batch_size, len(dev_set))), collate_fn=collate_tts
        )
    trainer = _DevTrainer(
        model,
        loader,
        valid_loader=dev_loader,
        trainer_cfg=trainer_config,
        optim_cfg=optim_config,
        full_config=full_config,
        run_dir=run_dir,
        sample_rate=model.config.sample_rate,
    )
    trainer.free_running_dev = free_running_dev if dev_rows else None
    result = trainer.fit()
    checkpoint = Path(run_dir) / "checkpoints" / f"step_{trainer.step:08d}.pt"
    if not checkpoint.is_file():
        checkpoint = latest_checkpoint(Path(run_dir) / "checkpoints")
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if dev_rows and best.is_file():  # evaluate and hand on the best dev-loss weights
        model.load_state_dict(load_torch_file(best, "checkpoint")["model"])
        checkpoint = best
    # the dev criteria at every evaluation (also drawn in run_dir/curves.png)
    extra = {"select_on": select_on, "criterion": criterion} if dev_rows else {}
    if dev_rows:
        extra["dev_curve"] = dev_curve(run_dir)
    return Path(checkpoint), {
        **result,
        "steps_run": trainer.step,
        "max_steps": max_steps,
        **extra,
    }


def max_parameter_difference(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> float:
    """Largest ``|model parameter - state_dict entry|`` over the entries of ``state_dict``
    whose shapes match the model's (the grown speaker table is compared row by row)."""
    largest = 0.0
    own = model.state_dict()
    for name, value in state_dict.items():
        mine = own[name]
        if mine.shape != value.shape:  # speaker table: the pre-trained rows come first
            mine = mine[: value.shape[0]]
        largest = max(largest, float((mine.float() - value.float()).abs().max()))
    return largest


def finetune_model(
    config: TacotronConfig, checkpoint: str | Path | None, speaker_init: str = "mean", seed: int = 0
) -> tuple[TacotronTTS, int, float]:
    """The model fine-tuning starts from, its target speaker id, and the check
    ``max |parameter - pre-trained parameter|`` (0.0 when loaded exactly; NaN without one).

    Without a checkpoint (fraction 0) it is a fresh one-speaker model (speaker 0). With one,
    the model is built with the checkpoint's Tacotron config, loads the pre-trained weights
    and appends a speaker vector for the target (``speaker_init``: ``mean`` or ``random``).
    """
    if checkpoint is None:
        torch.manual_seed(seed)
        return TacotronTTS(replace(config, num_speakers=1)), 0, float("nan")
    state = load_torch_file(checkpoint, "checkpoint")
    spec = state.get("config", {}).get("tts_model")
    pretrained_config = TacotronConfig(**spec) if spec else config
    model = TacotronTTS(pretrained_config)
    model.load_pretrained(state["model"])
    difference = max_parameter_difference(model, state["model"])
    speaker = model.add_speaker(init=speaker_init, seed=seed)
    return model, speaker, difference


@dataclass
class Reference:
    """A held-out sentence's recording, loaded once for every fraction's scoring."""

    wav: np.ndarray  # (T,) at the model's sample rate
    frames: int  # mel frames of the recording: 1 + T // hop_length
    pitch: tuple[np.ndarray, np.ndarray] | None  # pyin (f0, voiced), each (frames,)


def _load_reference(job: tuple) -> Reference:
    path, sample_rate, n_fft, hop_length, with_f0 = job
    wav = audio.load(path, sample_rate=sample_rate).numpy()
    pitch = None
    if with_f0:
        pitch = pitch_track(wav, sample_rate, frame_length=n_fft, hop_length=hop_length)
    return Reference(wav, 1 + len(wav) // hop_length, pitch)


def load_references(
    sentences: Sequence[TestSentence], config: TacotronConfig, *, with_f0: bool = True, mapper=map
) -> dict[str, Reference]:
    """``{id: Reference}`` for the sentences with a recording (pyin tracked here once, not
    once per fraction). ``mapper``: ``map`` or an executor's ``map`` to spread the work."""
    jobs = [
        (sentence.reference, config.sample_rate, config.n_fft, config.hop_length, with_f0)
        for sentence in sentences
        if sentence.in_domain
    ]
    ids = [sentence.id for sentence in sentences if sentence.in_domain]
    return dict(zip(ids, mapper(_load_reference, jobs), strict=True))


def _score_against_reference(job: tuple) -> dict:
    """MCD-DTW(-SL) of a predicted mel and F0 metrics of its WAV against a reference
    (a module-level function so that a process pool can run it)."""
    reference, mel, wav, expected_frames, frames, config, with_f0 = job
    mcd, path = mel_cepstral_distortion_dtw(
        reference.wav,
        mel,
        config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        return_path=True,
    )
    length_ratio = max(expected_frames, frames) / max(min(expected_frames, frames), 1)
    scores = {"mcd_dtw_db": mcd, "mcd_dtw_sl_db": mcd * length_ratio}
    if with_f0 and wav is not None and len(wav) > config.n_fft:
        pitch = f0_metrics(
            reference.wav,
            wav,
            config.sample_rate,
            frame_length=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            path=path,
            reference_pitch=reference.pitch,
        )
        scores["log_f0_rmse_cents"] = pitch["log_f0_rmse_cents"]
        scores["voicing_decision_error"] = pitch["voicing_decision_error"]
    return scores


@torch.no_grad()
def evaluate_model(
    model: TacotronTTS,
    speaker: int,
    sentences: Sequence[TestSentence],
    vocoder,
    out_dir: str | Path | None,
    *,
    frames_per_char: float = 1.0,
    seed: int = 0,
    max_length_ratio: float = 3.0,
    with_f0: bool = True,
    keep_alignments: Sequence[str] = (),
    batch_size: int = 16,
    references: Mapping[str, Reference] | None = None,
    mapper=map,
    timings: dict | None = None,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Synthesize every sentence for ``speaker``, write ``out_dir/<id>.wav``, score it.

    Synthesis is free-running and batched (``batch_size`` sentences of similar length per
    batch, the torch RNG seeded per batch, since Tacotron 2 keeps pre-net dropout on at
    inference). Each sentence's decoder may run for ``max_length_ratio`` times its expected
    length; a sentence of the batch that has not stopped by then is cut there and counts as
    not ``stopped``. MCD-DTW(-SL) compares the reference recording with the *predicted mel*
    (so the vocoder's error is not counted); log-F0 RMSE and voicing error compare it with
    the vocoded WAV, paired by the MCD's DTW path. Sentences without a reference get the
    attention metrics and a stop-length error against ``characters x frames_per_char``.

    With ``vocoder`` None nothing is vocoded or written (``out_dir`` may be None) and the F0
    metrics are skipped: the free-running dev criterion (:class:`FreeRunningDev`) scores the
    predicted mels alone.

    Args:
        references: :func:`load_references` of ``sentences`` (loaded here when None).
        mapper: ``map`` or an executor's ``map``: the per-sentence scoring (DTW, pyin) runs
            through it.
        timings: a dict that receives ``synthesis_s`` (decoding, vocoding, WAVs) and
            ``scoring_s`` (the reference metrics).

    Returns one row per sentence in ``sentences`` order (``id``, ``bin``, ``similarity``,
    metrics, ``frames``, ``stopped``) and the alignments ``(S, L)`` of the ids in
    ``keep_alignments``.
    """
    with_f0 = with_f0 and vocoder is not None  # F0 is tracked on the vocoded WAV
    if vocoder is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    step_frames = config.frames_per_step
    if references is None:
        references = load_references(sentences, config, with_f0=with_f0)
    model.eval()
    characters = [len(model.frontend.encode(sentence.text)) for sentence in sentences]
    expected = [
        references[sentence.id].frames
        if sentence.in_domain
        else max(1, round(count * frames_per_char))
        for sentence, count in zip(sentences, characters, strict=True)
    ]
    # the decoder-step guard of each sentence
    guards = [math.ceil(max_length_ratio * frames / step_frames) + 1 for frames in expected]
    # batches of similar text length waste fewer decoder steps on padding
    order = sorted(range(len(sentences)), key=lambda index: (characters[index], index))
    started = time.perf_counter()
    rows: dict[int, dict] = {}
    jobs, job_rows, alignments = [], [], {}
    for batch_number, start in enumerate(range(0, len(order), batch_size)):
        members = order[start : start + batch_size]
        torch.manual_seed(seed + batch_number)
        output = model.synthesize(
            [sentences[index].text for index in members],
            speaker=speaker,
            max_decoder_steps=max(guards[index] for index in members),
        )
        steps = [
            max(1, min(int(output.mel_lengths[slot]) // step_frames, guards[index]))
            for slot, index in enumerate(members)
        ]
        frames = torch.tensor([count * step_frames for count in steps])
        # the vocoder runs on the CPU (the model may be on a GPU); (B, n_mels, F) cropped
        # to the longest kept synthesis
        mels = output.mel[:, :, : int(frames.max())].cpu()
        if vocoder is not None:
            wavs, wav_lengths = vocoder(mels, frames)
        for slot, index in enumerate(members):
            sentence = sentences[index]
            kept_frames = int(frames[slot])
            mel = mels[slot, :, :kept_frames]  # (n_mels, F)
            wav = None
            if vocoder is not None:
                wav = wavs[slot, : int(wav_lengths[slot])].cpu()
                audio.save(out_dir / f"{sentence.id}.wav", wav, vocoder.sample_rate)
            alignment = output.alignments[slot, : steps[slot], : characters[index]].cpu()
            # stopped: the stop token fired within this sentence's own guard
            fired = int(output.mel_lengths[slot]) // step_frames <= guards[index]
            rows[index] = {
                "id": sentence.id,
                "text": sentence.text,
                "bin": sentence.bin,
                "similarity": sentence.similarity,
                "frames": kept_frames,
                "expected_frames": expected[index],
                "stopped": bool(output.stopped[slot]) and fired,
                "attention_focus_rate": attention_focus_rate(alignment),
                "attention_diagonality": attention_diagonality(alignment),
                "stop_length_error": float(stop_length_error([kept_frames], [expected[index]])[0]),
            }
            if sentence.in_domain:
                mel_array = mel.double().numpy()
                wav_array = None if wav is None else wav.numpy()
                job = (references[sentence.id], mel_array, wav_array, expected[index])
                jobs.append((*job, kept_frames, config, with_f0))
                job_rows.append(index)
            if sentence.id in keep_alignments:
                alignments[sentence.id] = alignment.numpy()
    synthesized = time.perf_counter()
    for index, scores in zip(job_rows, mapper(_score_against_reference, jobs), strict=True):
        rows[index].update(scores)
    if timings is not None:
        timings["synthesis_s"] = synthesized - started
        timings["scoring_s"] = time.perf_counter() - synthesized
    return [rows[index] for index in range(len(sentences))], alignments


# the table's metrics: the per-sentence ones and the share of sentences that stopped;
# True where higher is better
HIGHER_IS_BETTER = {
    "mcd_dtw_db": False,
    "mcd_dtw_sl_db": False,
    "log_f0_rmse_cents": False,
    "voicing_decision_error": False,
    "attention_focus_rate": True,
    "attention_diagonality": True,
    "stop_length_error": False,
    "stopped": True,
}
TABLE_METRICS = (*METRICS, "stopped")


def _sentence_mean(_: np.ndarray, values: np.ndarray) -> float:
    """The bootstrap's statistic: the mean over the resampled sentences (``speechssl.stats``
    metrics take ``(y_true, y_pred)``; here both carry the per-sentence values)."""
    return float(np.mean(values))


def _values(rows: Sequence[Mapping], metric: str) -> dict[str, float]:
    """``{sentence id: value}`` of the rows with a finite ``metric``."""
    values = {}
    for row in rows:
        value = row.get(metric)
        if value is not None and math.isfinite(float(value)):
            values[row["id"]] = float(value)
    return values


def sentence_estimate(values: Sequence[float], num_resamples: int = 1000) -> Estimate:
    """Mean of per-sentence values with its 95 % bootstrap CI over sentences
    (:func:`speechssl.stats.bootstrap_metric`, one seed)."""
    array = np.asarray(values, dtype=np.float64)
    return bootstrap_metric(_sentence_mean, array, [array], num_resamples=num_resamples)


def summarize(
    rows: Sequence[Mapping], bin_order: Sequence[str], *, num_resamples: int = 1000
) -> dict:
    """Per-sentence rows (with ``fraction``) -> ``{"table": [...], "deltas": [...]}``.

    ``table``: one row per fraction x bin x metric, ``{"fraction", "bin", "metric", "mean",
    "ci95": [lo, hi], "n_items"}``: the mean over the bin's sentences and its 95 %
    bootstrap CI over them (:func:`speechssl.stats.bootstrap_metric`). ``stopped`` is the
    share of sentences whose stop token fired.

    ``deltas``: for each bin and metric, ``a - b`` on the sentences both arms scored, with
    its paired 95 % bootstrap CI (:func:`speechssl.stats.paired_bootstrap_delta`), for every
    fraction ``a`` > 0 against ``b`` = 0 (no pre-training) and for ``a`` = 1/8 against
    ``b`` = 1; ``"better"`` names the better arm, ``"significant"`` whether the CI excludes 0.
    """
    rows = [{**row, "stopped": float(bool(row["stopped"]))} for row in rows]
    fractions = sorted({float(row["fraction"]) for row in rows})
    cells = {
        (fraction, name): [r for r in rows if float(r["fraction"]) == fraction and r["bin"] == name]
        for fraction in fractions
        for name in bin_order
    }
    table = []
    for (fraction, name), members in cells.items():
        for metric in TABLE_METRICS:
            values = list(_values(members, metric).values())
            if not values:
                continue  # e.g. OOD sentences have no MCD
            estimate = sentence_estimate(values, num_resamples)
            row = {"fraction": fraction, "bin": name, "metric": metric}
            table.append({**row, **estimate.as_dict(), "n_items": len(values)})
    comparisons = [(fraction, 0.0) for fraction in fractions if fraction > 0 and 0.0 in fractions]
    if 0.125 in fractions and 1.0 in fractions:
        comparisons.append((0.125, 1.0))
    deltas, differences = [], {}
    for a, b in comparisons:
        for name in bin_order:
            for metric in TABLE_METRICS:
                arm_a, arm_b = _values(cells[a, name], metric), _values(cells[b, name], metric)
                shared = sorted(set(arm_a) & set(arm_b))
                if not shared:
                    continue
                values_a = np.array([arm_a[key] for key in shared])
                values_b = np.array([arm_b[key] for key in shared])
                differences[a, b, name, metric] = values_a - values_b  # (n,) per sentence
                delta = paired_bootstrap_delta(
                    _sentence_mean, values_a, [values_a], [values_b], num_resamples=num_resamples
                )
                a_better = (delta.delta > 0) == HIGHER_IS_BETTER[metric]
                deltas.append(
                    {
                        "bin": name,
                        "metric": metric,
                        "a": a,
                        "b": b,
                        **delta.as_dict(),
                        "n_items": len(shared),
                        "better": (a if a_better else b) if delta.delta != 0 else None,
                        "significant": excludes_zero(delta),
                    }
                )
    return {
        "table": table,
        "deltas": deltas,
        "contrasts": _bin_contrasts(differences, bin_order, num_resamples),
    }


def _bin_contrasts(
    differences: Mapping[tuple, np.ndarray], bin_order: Sequence[str], num_resamples: int
) -> list[dict]:
    """Is a comparison's delta larger in one bin than in the most similar bin? For each
    ``(a, b, metric)`` and each bin other than the reference (the last in-domain bin,
    ``high``), ``contrast`` = its mean per-sentence delta minus the reference's, with a 95 %
    bootstrap CI over the two bins' (different) sentences
    (:func:`speechssl.stats.unpaired_bootstrap_difference`). Negative = the delta is more
    negative there (for MCD and stop-length error: a larger benefit of ``a``)."""
    in_domain = [name for name in bin_order if name != OOD_BIN]
    if len(in_domain) < 2:
        return []
    reference = in_domain[-1]
    contrasts = []
    for (a, b, name, metric), values in differences.items():
        base = differences.get((a, b, reference, metric))
        if name == reference or base is None:
            continue
        difference = unpaired_bootstrap_difference(values, base, num_resamples=num_resamples)
        contrasts.append(
            {
                "a": a,
                "b": b,
                "metric": metric,
                "bin": name,
                "reference_bin": reference,
                "contrast": difference.delta,
                "ci95": [difference.low, difference.high],
                "n_items": [len(values), len(base)],
                "significant": excludes_zero(difference),
            }
        )
    return contrasts


def similarity_by_bin(
    sentences: Sequence[TestSentence], bin_order: Sequence[str], num_resamples: int = 1000
) -> dict[str, dict]:
    """``{bin: {"mean", "ci95", "n_items"}}``: each bin's mean similarity score (max TF-IDF
    cosine to the target training text) with its bootstrap CI over the bin's sentences."""
    summary = {}
    for name in bin_order:
        scores = [sentence.similarity for sentence in sentences if sentence.bin == name]
        if scores:
            estimate = sentence_estimate(scores, num_resamples)
            summary[name] = {
                "mean": estimate.mean,
                "ci95": [estimate.low, estimate.high],
                "n_items": len(scores),
            }
    return summary


def _fraction_text(fraction: float) -> str:
    if fraction in (0.0, 1.0):
        return f"{fraction:g}"
    denominator = round(1 / fraction)
    return f"1/{denominator}" if abs(1 / denominator - fraction) < 1e-9 else f"{fraction:g}"


# decimal digits per metric in the Markdown tables (3 for the others)
_DIGITS = {"mcd_dtw_db": 2, "mcd_dtw_sl_db": 2, "log_f0_rmse_cents": 1, "stopped": 2}


def _cell_text(mean: float, ci95: Sequence[float], metric: str, sign: bool = False) -> str:
    digits = _DIGITS.get(metric, 3)
    prefix = "+" if sign and mean > 0 else ""
    return f"{prefix}{mean:.{digits}f} [{ci95[0]:.{digits}f}, {ci95[1]:.{digits}f}]"


def results_markdown(
    summary: Mapping,
    bins: SimilarityBins,
    pretrain_sizes: Mapping[float, Mapping],
    similarity: Mapping[str, Mapping] | None = None,
) -> str:
    """The study's tables: mean [95 % CI] per fraction x bin for every metric, the paired
    deltas (fraction - 0 and 1/8 - 1) per bin, the bins' similarity and the subset sizes."""
    cells = {(row["fraction"], row["bin"], row["metric"]): row for row in summary["table"]}
    keys = list(dict.fromkeys((row["fraction"], row["bin"]) for row in summary["table"]))
    header = ["fraction", "pre-train utts (spk)", "bin", "n", *TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for fraction, name in keys:
        size = pretrain_sizes.get(fraction, {})
        values = []
        for metric in TABLE_METRICS:
            cell = cells.get((fraction, name, metric))
            values.append(_cell_text(cell["mean"], cell["ci95"], metric) if cell else "–")
        count = max(row["n_items"] for k, row in cells.items() if k[:2] == (fraction, name))
        lines.append(
            "| "
            + " | ".join(
                [
                    _fraction_text(fraction),
                    f"{size.get('utterances', 0)} ({size.get('speakers', 0)})",
                    name,
                    str(count),
                    *values,
                ]
            )
            + " |"
        )
    if summary["deltas"]:
        pairs = list(dict.fromkeys((row["a"], row["b"]) for row in summary["deltas"]))
        by_key = {(r["a"], r["b"], r["bin"], r["metric"]): r for r in summary["deltas"]}
        names = list(dict.fromkeys(row["bin"] for row in summary["deltas"]))
        lines += [
            "",
            "Paired deltas a - b on the same sentences, mean [95 % CI]; * = the CI excludes 0.",
            "",
            "| metric | bin | "
            + " | ".join(f"{_fraction_text(a)} - {_fraction_text(b)}" for a, b in pairs)
            + " |",
            "| --- | --- |" + " --- |" * len(pairs),
        ]
        for metric in TABLE_METRICS:
            for name in names:
                texts = []
                for a, b in pairs:
                    row = by_key.get((a, b, name, metric))
                    if row is None:
                        texts.append("–")
                        continue
                    star = "*" if row["significant"] else ""
                    texts.append(_cell_text(row["delta"], row["ci95"], metric, sign=True) + star)
                if any(text != "–" for text in texts):
                    lines.append(f"| {metric} | {name} | " + " | ".join(texts) + " |")
    lines += _contrasts_markdown(summary.get("contrasts", []))
    thresholds = ", ".join(f"{value:.3f}" for value in bins.thresholds)
    counts = bins.to_dict()["counts"]
    notes = [
        "",
        (
            "Text-similarity bins (TF-IDF char 2-4-gram max cosine to the target training "
            f"text): {' < '.join(bins.names)} cut at [{thresholds}]; sentences per bin: {counts}."
        ),
    ]
    if similarity:
        notes.append(
            "Mean similarity per bin [95 % CI]: "
            + "; ".join(
                f"{name} {value['mean']:.3f} [{value['ci95'][0]:.3f}, {value['ci95'][1]:.3f}]"
                for name, value in similarity.items()
            )
            + "."
        )
    notes += [
        "`ood`: out-of-domain sentences without a recording (attention and stop-length only).",
        "`stopped`: share of sentences whose stop token fired before the length guard.",
    ]
    return "\n".join(lines + notes) + "\n"


def _contrasts_markdown(contrasts: Sequence[Mapping]) -> list[str]:
    """Lines of the bin-contrast table (:func:`summarize`'s ``contrasts``), MCD-DTW-SL,
    log-F0 RMSE and stop-length error only; empty without contrasts."""
    shown = [row for row in contrasts if row["metric"] in _CONTRAST_METRICS]
    if not shown:
        return []
    lines = [
        "",
        (
            "Bin contrasts: (a - b in the bin) - (a - b in the "
            f"{shown[0]['reference_bin']} bin), mean [95 % CI] over the two bins' sentences; "
            "* = the CI excludes 0."
        ),
        "",
        "| a - b | metric | bin | contrast |",
        "| --- | --- | --- | --- |",
    ]
    for row in shown:
        pair = f"{_fraction_text(row['a'])} - {_fraction_text(row['b'])}"
        text = _cell_text(row["contrast"], row["ci95"], row["metric"], sign=True)
        star = "*" if row["significant"] else ""
        lines.append(f"| {pair} | {row['metric']} | {row['bin']} | {text}{star} |")
    return lines


# the metrics whose bin contrasts the Markdown shows (results.json has all)
_CONTRAST_METRICS = ("mcd_dtw_sl_db", "log_f0_rmse_cents", "stop_length_error")


def write_study_plots(
    table: Sequence[Mapping],
    bin_order: Sequence[str],
    alignments: Mapping[str, Mapping[float, np.ndarray]],
    out_dir: str | Path,
    finetune_results: Mapping[float, Mapping] | None = None,
    select_on: str = "dev_loss",
) -> list[str]:
    """``<metric>.png`` (metric vs fraction, a line per bin, the 95 % CI as a band) for each
    metric of ``table`` (:func:`summarize`'s), ``alignment_<id>.png`` (the sentence under
    every fraction) and, given ``finetune_results`` with dev curves,
    ``finetune_dev_curves.png`` (:func:`write_dev_curves_plot`)."""
    out_dir = Path(out_dir)
    paths = []
    if finetune_results and any(r.get("dev_curve") for r in finetune_results.values()):
        paths.append(write_dev_curves_plot(finetune_results, select_on, out_dir))
    for metric in METRICS:
        rows = [row for row in table if row["metric"] == metric]
        if rows:
            order = [name for name in bin_order if any(row["bin"] == name for row in rows)]
            paths.append(plot_metric_vs_fraction(rows, metric, out_dir / f"{metric}.png", order))
    for sentence_id, by_fraction in alignments.items():
        fractions = sorted(by_fraction)
        paths.append(
            plot_alignments(
                [by_fraction[fraction] for fraction in fractions],
                [f"{sentence_id}, fraction {_fraction_text(fraction)}" for fraction in fractions],
                out_dir / f"alignment_{sentence_id}.png",
                columns=min(len(fractions), 3),
            )
        )
    return paths


def write_dev_curves_plot(
    finetune_results: Mapping[float, Mapping], select_on: str, out_dir: str | Path
) -> str:
    """``finetune_dev_curves.png``: every fraction's fine-tuning dev criteria against the
    step, the ``select_on`` criterion marked and each kept (``best_step``) evaluation ringed.
    ``finetune_results``: ``{fraction: train_tts result with "dev_curve"}``."""
    curves = {
        fraction: result.get("dev_curve", []) for fraction, result in finetune_results.items()
    }
    best = {fraction: result.get("best_step") for fraction, result in finetune_results.items()}
    path = Path(out_dir) / "finetune_dev_curves.png"
    return plot_dev_curves(curves, path, SELECT_ON.get(select_on, select_on), best)


def describe_sentences(sentences: Sequence[TestSentence]) -> list[dict]:
    """JSON-ready list of the test sentences."""
    return [asdict(sentence) for sentence in sentences]
