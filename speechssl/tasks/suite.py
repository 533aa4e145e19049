"""The evaluation suite: speaker ID, speaker verification, emotion LOSO, keyword spotting
and plain classification for any upstream, with seeds, 95 % CIs and paired deltas.

One :class:`Suite` serves the recipes and ``speechssl evaluate``. For each upstream and
seed it builds the encoder, runs the task and keeps every test item's prediction, so
that a cell is a bootstrap over seeds and items (:func:`speechssl.stats.bootstrap_metric`)
and a comparison is a paired bootstrap over the same items
(:func:`speechssl.stats.paired_bootstrap_delta`).

Heads:

* ``LinearProbeConfig`` (``head=linear_probe``): the converged logistic probe on pooled
  frozen features, the default at CPU scale. It is deterministic, so the seeds of an
  upstream vary only what is random in it (a random init, a pre-training run).
* ``ClassifierHeadConfig`` / ``EcapaHeadConfig``: the trained heads of the paper
  protocol (SUPERB), frozen or fine-tuned; the seed also seeds the head.

Frozen upstreams go through one :class:`~speechssl.tasks.pooled.FeatureCache`, so each
utterance is encoded once per (upstream, seed) whatever the folds and heads; its entries
live under ``run_dir/feature_cache``.

Each fit (a seed of a task, or one fold of a seed) writes its test predictions as it
finishes, to ``cell.json`` in its folder under ``run_dir`` (``<task>/<upstream>/seed<k>
[/fold_<session>]``), keyed by what it depends on (the encoder's weights, the three
manifests and their audio, the head and budget, the labels, the seed). A stopped run
keeps what it finished; run again with the same ``run_dir``, it reuses every cell whose
key still matches and encodes nothing the feature cache holds. Progress: a bar (a line
every 30 s in a log) over the seeds and folds, the encoding and the probe's fits.

Results are checked before they are scored: an upstream whose pooled features, or a
trained head whose probabilities, are not finite (NaN, inf) stops the cell with one line
naming the task, the upstream and the seed (:class:`NonFiniteResultError`), never a
chance-level score.

Example (FBANK on tones of two classes):
    >>> import tempfile
    >>> from speechssl.data.compact import Manifest
    >>> from speechssl.encoders.fbank_upstream import FbankUpstream
    >>> from speechssl.heads.linear_probe import LinearProbeConfig
    >>> from speechssl.testing import write_tone
    >>> root = tempfile.mkdtemp()
    >>> rows = lambda start: [{"id": f"u{i}", "audio": str(write_tone(f"{root}/u{i}.wav", 0.5,
    ...     16000, frequency=300 if i % 2 else 2000)), "duration": 0.5, "sample_rate": 16000,
    ...     "label": "low" if i % 2 else "high"} for i in range(start, start + 6)]
    >>> suite = Suite(LinearProbeConfig(c_grid=[1.0]), run_dir=root + "/suite")
    >>> fbank = Upstream("fbank", lambda seed: FbankUpstream(n_mels=40))
    >>> train, dev, test = (Manifest.from_rows(rows(start)) for start in (0, 6, 12))
    >>> outcome = suite.classification(fbank, train, dev, test, ["high", "low"])
    >>> summary = summarize([outcome])
    >>> summary["table"][0]["metric"], summary["table"][0]["mean"]
    ('accuracy', 100.0)
    >>> again = suite.classification(fbank, train, dev, test, ["high", "low"])
    >>> again.details[0]["reused"], suite.cache.encoded_utterances  # nothing fitted or encoded
    (True, 18)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechssl.data.compact import Manifest
from speechssl.heads.config import ClassifierHeadConfig, EcapaHeadConfig
from speechssl.heads.linear_probe import LinearProbe, LinearProbeConfig
from speechssl.progress_bar import progress_bar
from speechssl.safe_io import write_text_atomic
from speechssl.stats import (
    Delta,
    Estimate,
    accuracy,
    bootstrap_metric,
    excludes_zero,
    paired_bootstrap_delta,
)
from speechssl.tasks.classification import (
    TRANSFER_MODES,
    TransferConfig,
    predict,
    train_classifier,
    upstream_factory,
)
from speechssl.tasks.emotion import EmotionResults, loso_folds, validation_split
from speechssl.tasks.metrics import eer_and_mindcf, unweighted_accuracy
from speechssl.tasks.pooled import FeatureCache, encoder_fingerprint, manifest_fingerprint
from speechssl.tasks.pooled_head import label_indices
from speechssl.tasks.speaker import Trial, score_trials
from speechssl.tasks.speaker_protocol import speakers_of

__all__ = [
    "METRICS",
    "NonFiniteResultError",
    "Suite",
    "TaskOutcome",
    "Upstream",
    "shared_speakers",
    "summarize",
    "summary_markdown",
    "transfer_upstreams",
]


def _eer(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.min() == labels.max():  # a resample with one kind of trial: no threshold
        return float("nan")
    return eer_and_mindcf(scores, labels)["eer"]


# metric name -> (function(y_true, predictions), higher is better)
METRICS: dict[str, tuple[Callable, bool]] = {
    "accuracy": (accuracy, True),
    "ua": (unweighted_accuracy, True),
    "eer": (_eer, False),
}
# the metrics each task reports
TASK_METRICS = {
    "speaker_id": ("accuracy",),
    "speaker_verification": ("eer",),
    "emotion": ("accuracy", "ua"),
    "keyword": ("accuracy",),
    "classification": ("accuracy", "ua"),
}


class NonFiniteResultError(ValueError):
    """An upstream's features or a head's outputs hold NaN or inf: no score is given."""


def check_finite(values: torch.Tensor, what: str, where: str) -> torch.Tensor:
    """``values (N, ...)`` unchanged when every entry is finite; else one-line refusal.

    Example:
        >>> check_finite(torch.tensor([[1.0], [float("nan")]]), "features", "emotion / x / seed 0")
        Traceback (most recent call last):
            ...
        speechssl.tasks.suite.NonFiniteResultError: emotion / x / seed 0: the features are NaN or inf for 1 of 2 utterances; no score is given (a diverged or damaged upstream?)
    """
    bad = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)  # (N,)
    if bool(bad.any()):
        raise NonFiniteResultError(
            f"{where}: the {what} are NaN or inf for {int(bad.sum())} of {len(values)} "
            "utterances; no score is given (a diverged or damaged upstream?)"
        )
    return values


@dataclass
class Upstream:
    """A named upstream: ``build(seed)`` returns its encoder for one seed.

    Attributes:
        name: the row name in tables (``fbank``, ``random_frozen``, ``pretrained``...).
        build: a fresh encoder per seed (a random init seeded with it, a pre-training
            run's checkpoint, or the same fixed encoder every time).
        seeds: the seeds to run (deterministic upstreams under the probe need one).
        mode: ``"frozen"`` or ``"finetune"`` (trained heads only; the probe is frozen).
    """

    name: str
    build: Callable[[int], nn.Module]
    seeds: Sequence[int] = (0,)
    mode: str = "frozen"


@dataclass
class TaskOutcome:
    """Every test item's truth and each seed's predictions for one (task, upstream)."""

    task: str
    upstream: str
    y_true: np.ndarray
    predictions: list[np.ndarray] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    details: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    # verification: the first seed's utterance embeddings (N, D), e.g. for a t-SNE plot
    embeddings: torch.Tensor | None = None


class Suite:
    """Runs the downstream tasks for upstreams (see the module docstring).

    Args:
        head: a :class:`LinearProbeConfig`, ``ClassifierHeadConfig`` or ``EcapaHeadConfig``.
        transfer: the trained heads' budget (ignored by the probe).
        run_dir: trained heads write one folder per (task, upstream, seed, fold) here;
            the feature cache keeps its files under ``run_dir/feature_cache``.
        verification_layers: hidden states averaged for verification (None: all).
        progress: called with one line per finished unit of work.
        finetune_head: the trained head of fine-tuned upstreams when ``head`` is the probe
            (which only reads frozen features); default SUPERB's mean-pool classifier.
    """

    def __init__(
        self,
        head,
        transfer: TransferConfig | None = None,
        run_dir: str | Path = "runs/evaluate",
        *,
        verification_layers: Sequence[int] | None = None,
        progress: Callable[[str], None] | None = None,
        finetune_head: ClassifierHeadConfig | None = None,
    ) -> None:
        self.head = head
        self.finetune_head = finetune_head or ClassifierHeadConfig(mode="finetune")
        self.transfer = transfer or TransferConfig()
        self.run_dir = Path(run_dir)
        self.verification_layers = verification_layers
        self.progress = progress or (lambda line: None)
        device = str(getattr(self.transfer.trainer.device, "value", self.transfer.trainer.device))
        self.cache = FeatureCache(
            self.run_dir / "feature_cache",
            data_config=self.transfer.data,
            device="cuda" if device != "cpu" and torch.cuda.is_available() else "cpu",
        )

    def head_for(self, upstream: Upstream, task: str = "speaker_id"):
        """The head config an upstream is scored with on a task: the probe reads frozen
        upstreams only, and ECAPA + AAM softmax is a speaker head (UniSpeech-SAT, SUPERB
        SID), so other tasks keep SUPERB's utterance classifier."""
        if isinstance(self.head, LinearProbeConfig) and upstream.mode == "finetune":
            return self.finetune_head
        if isinstance(self.head, EcapaHeadConfig) and task != "speaker_id":
            return ClassifierHeadConfig(
                freeze_feature_extractor=self.head.freeze_feature_extractor,
                use_layer_sum=self.head.use_layer_sum,
                layer_norm=self.head.layer_norm,
            )
        return self.head

    # ------------------------------------------------------------------ one fit, any head
    def _fit_predict(
        self,
        encoder: nn.Module,
        upstream: Upstream,
        seed: int,
        train: Manifest,
        dev: Manifest,
        test: Manifest,
        labels: Sequence[str],
        label_column: str,
        run_dir: Path,
        task: str,
    ) -> tuple[np.ndarray, dict]:
        """Test predictions ``(N,)`` class indices and what the fit reported, read from
        ``run_dir/cell.json`` where an earlier run finished this very fit."""
        head = self.head_for(upstream, task)
        # before the fit: fine-tuning changes the encoder's weights in place
        key = _cell_key(
            encoder_fingerprint(encoder),
            [manifest_fingerprint(split) for split in (train, dev, test)],
            repr(head),
            "" if isinstance(head, LinearProbeConfig) else repr(self.transfer),
            upstream.mode,
            list(labels),
            label_column,
            seed,
        )
        saved = _read_cell(run_dir / CELL_FILE, key, len(test))
        if saved is not None:
            self.progress(f"{run_dir.relative_to(self.run_dir).as_posix()}: finished earlier")
            return saved
        predicted, detail = self._fit(
            encoder, head, upstream, seed, train, dev, test, labels, label_column, run_dir, task
        )
        _write_cell(run_dir / CELL_FILE, key, predicted, detail)
        return predicted, detail

    def _fit(
        self,
        encoder: nn.Module,
        head,
        upstream: Upstream,
        seed: int,
        train: Manifest,
        dev: Manifest,
        test: Manifest,
        labels: Sequence[str],
        label_column: str,
        run_dir: Path,
        task: str,
    ) -> tuple[np.ndarray, dict]:
        where = f"{task} / {upstream.name} / seed {seed}"
        if isinstance(head, LinearProbeConfig):
            probe = LinearProbe(head)
            fit = probe.fit(
                self._pooled(encoder, train, where),
                label_indices(train, label_column, labels),
                self._pooled(encoder, dev, where),
                label_indices(dev, label_column, labels),
                num_classes=len(labels),
            )
            predicted = probe.predict(self._pooled(encoder, test, where)).numpy()
            return predicted, {"probe": fit._asdict()}
        head = dataclasses.replace(head, mode=upstream.mode)
        run = train_classifier(
            encoder,
            head,
            train,
            dev,
            labels,
            self.transfer,
            run_dir,
            label_column=label_column,
            seed=seed,
            cache=self.cache,
        )
        predictions = predict(
            run.model,
            test,
            self.transfer,
            label_column=label_column,
            labels=labels,
            cache=self.cache,
        )
        check_finite(predictions.probabilities, "head's probabilities", where)
        weights = run.model.layer_weights()
        return predictions.y_pred.numpy(), {
            "training": run.result.get("training"),
            "layer_weights": None if weights is None else weights.detach().cpu().tolist(),
        }

    def _pooled(self, encoder: nn.Module, manifest: Manifest, where: str) -> torch.Tensor:
        """The cache's pooled features ``(N, L + 1, 2, D)``, checked finite."""
        return check_finite(self.cache.pooled(encoder, manifest), "features", where)

    def _encoder(self, upstream: Upstream, seed: int) -> nn.Module:
        # whatever the builder draws from the global RNG is fixed by the seed
        torch.manual_seed(seed)
        return upstream.build(seed)

    # ------------------------------------------------------------------ tasks
    def classification(
        self,
        upstream: Upstream,
        train: Manifest,
        dev: Manifest,
        test: Manifest,
        labels: Sequence[str],
        *,
        label_column: str = "label",
        task: str = "classification",
    ) -> TaskOutcome:
        """Train on ``train``, choose on ``dev``, predict ``test`` (one fit per seed)."""
        start = time.perf_counter()
        outcome = TaskOutcome(
            task, upstream.name, label_indices(test, label_column, labels).numpy()
        )
        for seed in progress_bar(upstream.seeds, desc=f"{task} / {upstream.name}", unit="seed"):
            encoder = self._encoder(upstream, seed)
            predicted, detail = self._fit_predict(
                encoder,
                upstream,
                seed,
                train,
                dev,
                test,
                labels,
                label_column,
                self.run_dir / task / upstream.name / f"seed{seed}",
                task,
            )
            outcome.predictions.append(predicted)
            outcome.seeds.append(seed)
            outcome.details.append({"seed": seed, **detail})
            self.progress(
                f"{task} / {upstream.name} / seed {seed}: accuracy "
                f"{100 * accuracy(outcome.y_true, predicted):.1f} %"
            )
        outcome.seconds = time.perf_counter() - start
        return outcome

    def speaker_identification(
        self, upstream: Upstream, train: Manifest, dev: Manifest, test: Manifest
    ) -> TaskOutcome:
        """Closed-set speaker ID (VoxCeleb1 ``iden_split``): top-1 on ``test``."""
        speakers = speakers_of(train)
        for name, split in (("dev", dev), ("test", test)):
            unknown = sorted(set(speakers_of(split)) - set(speakers))
            if unknown:
                raise ValueError(f"{name} speakers missing from train (closed set): {unknown[:5]}")
        return self.classification(
            upstream, train, dev, test, speakers, label_column="speaker", task="speaker_id"
        )

    def keyword(
        self, upstream: Upstream, train: Manifest, dev: Manifest, test: Manifest
    ) -> TaskOutcome:
        """Speaker-independent spoken-word recognition (SUPERB keyword spotting): the word
        (``label``) of each ``test`` clip, from a probe trained on other speakers' clips.

        The words are those of ``train``; no speaker may be in two splits (a test speaker
        heard in training would let the speaker's voice, not the word, carry the answer).

        Raises:
            ValueError: splits share a speaker, or dev/test hold a word train lacks.
        """
        shared = shared_speakers({"train": train, "dev": dev, "test": test})
        if shared:
            pairs = ", ".join(f"{a}/{b}: {names[:3]}" for (a, b), names in shared.items())
            raise ValueError(f"keyword splits must be speaker-disjoint; shared speakers {pairs}")
        words = sorted({str(word) for word in train.column("label").values()})
        for name, split in (("dev", dev), ("test", test)):
            unknown = sorted({str(word) for word in split.column("label").values()} - set(words))
            if unknown:
                raise ValueError(f"keyword {name} words missing from train: {unknown[:5]}")
        return self.classification(upstream, train, dev, test, words, task="keyword")

    def speaker_verification(
        self, upstream: Upstream, manifest: Manifest, trials: Sequence[Trial]
    ) -> TaskOutcome:
        """Training-free verification: cosine of per-layer means averaged over layers."""
        start = time.perf_counter()
        trials = list(trials)
        labels = np.array([int(trial.label) for trial in trials])
        outcome = TaskOutcome("speaker_verification", upstream.name, labels)
        ids = [manifest.row(index)["id"] for index in range(len(manifest))]
        for seed in upstream.seeds:
            where = f"speaker_verification / {upstream.name} / seed {seed}"
            means = self._pooled(self._encoder(upstream, seed), manifest, where)[:, :, 0]
            chosen = (
                range(means.shape[1])
                if self.verification_layers is None
                else list(self.verification_layers)
            )
            embeddings = means[:, list(chosen)].mean(dim=1)  # (N, L+1, D) -> (N, D)
            scores, _ = score_trials(dict(zip(ids, embeddings)), trials)
            if outcome.embeddings is None:
                outcome.embeddings = embeddings
            outcome.predictions.append(scores.numpy())
            outcome.seeds.append(seed)
            outcome.details.append({"seed": seed, **eer_and_mindcf(scores, labels)})
            self.progress(
                f"speaker_verification / {upstream.name} / seed {seed}: EER "
                f"{100 * outcome.details[-1]['eer']:.1f} %"
            )
        outcome.seconds = time.perf_counter() - start
        return outcome

    def emotion(
        self,
        upstream: Upstream,
        manifest: Manifest,
        labels: Sequence[str],
        *,
        validation: str = "session",
        max_folds: int = 0,
    ) -> TaskOutcome:
        """Leave-one-session-out: each utterance is predicted once, by the fold that holds
        its session out; dev is carved from the training sessions only."""
        start = time.perf_counter()
        if "session" not in manifest.columns:
            raise ValueError("leave-one-session-out folds need a 'session' column")
        sessions = manifest.column("session").values()
        speakers = manifest.column("speaker").values() if "speaker" in manifest.columns else None
        folds = loso_folds(sessions)[: max_folds or None]
        tested = np.sort(np.concatenate([fold.test for fold in folds]))
        y_all = label_indices(manifest, "label", labels).numpy()
        outcome = TaskOutcome("emotion", upstream.name, y_all[tested])
        position = {row: index for index, row in enumerate(tested)}
        for seed in progress_bar(upstream.seeds, desc=f"emotion / {upstream.name}", unit="seed"):
            encoder = self._encoder(upstream, seed)
            predicted = np.full(len(tested), -1)
            results = EmotionResults(labels)
            fold_details = []
            for fold in progress_bar(folds, desc=f"seed {seed}", unit="fold", leave=False):
                train_rows, dev_rows = validation_split(
                    fold, sessions, strategy=validation, speakers=speakers, seed=seed
                )
                fold_predicted, detail = self._fit_predict(
                    # a fine-tuned encoder starts again from the upstream in every fold
                    encoder if upstream.mode == "frozen" else self._encoder(upstream, seed),
                    upstream,
                    seed,
                    manifest.subset(train_rows),
                    manifest.subset(dev_rows),
                    manifest.subset(fold.test),
                    labels,
                    "label",
                    self.run_dir
                    / "emotion"
                    / upstream.name
                    / f"seed{seed}"
                    / f"fold_{fold.session}",
                    "emotion",
                )
                predicted[[position[row] for row in fold.test]] = fold_predicted
                results.add_fold(fold.session, y_all[fold.test], fold_predicted)
                fold_details.append({"session": fold.session, **detail})
            outcome.predictions.append(predicted)
            outcome.seeds.append(seed)
            summary = results.summary()
            outcome.details.append({"seed": seed, "loso": summary, "folds": fold_details})
            self.progress(
                f"emotion / {upstream.name} / seed {seed}: WA {100 * summary['pooled_wa']:.1f} %, "
                f"UA {100 * summary['pooled_ua']:.1f} % ({len(folds)} folds)"
            )
        outcome.seconds = time.perf_counter() - start
        return outcome


# the file in each fit's folder that holds its finished result
CELL_FILE = "cell.json"


def _cell_key(*parts) -> str:
    """Hex digest of what a fit depends on (JSON-able parts, in order)."""
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def _read_cell(path: Path, key: str, num_items: int) -> tuple[np.ndarray, dict] | None:
    """A finished fit's ``(predictions, detail)`` if ``path`` holds one under ``key``."""
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
        if cell["key"] != key or len(cell["predicted"]) != num_items:
            return None
        return np.asarray(cell["predicted"], dtype=np.int64), {**cell["detail"], "reused": True}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, cut short or another run's: fit again


def _write_cell(path: Path, key: str, predicted: np.ndarray, detail: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"key": key, "predicted": np.asarray(predicted).tolist(), "detail": detail}
    write_text_atomic(path, json.dumps(cell, default=str) + "\n")


def shared_speakers(splits: dict[str, Manifest]) -> dict[tuple[str, str], list[str]]:
    """``{(split_a, split_b): [speakers in both]}`` for every pair of named splits that
    share a speaker (empty: speaker-disjoint).

    Example:
        >>> row = lambda i, speaker: {"id": f"u{i}", "audio": "x.wav", "duration": 1.0,
        ...     "sample_rate": 16000, "speaker": speaker}
        >>> shared_speakers({"train": Manifest.from_rows([row(0, "a"), row(1, "b")]),
        ...     "test": Manifest.from_rows([row(2, "b")])})
        {('train', 'test'): ['b']}
    """
    speakers = {name: set(speakers_of(split)) for name, split in splits.items()}
    names = list(speakers)
    shared = {}
    for index, a in enumerate(names):
        for b in names[index + 1 :]:
            both = sorted(speakers[a] & speakers[b])
            if both:
                shared[a, b] = both
    return shared


def transfer_upstreams(
    modes: Sequence[str],
    encoder_config,
    checkpoints: dict[str, Sequence[Path]],
    seeds: Sequence[int],
    *,
    deterministic_head: bool,
    n_mels: int = 80,
) -> list[Upstream]:
    """The upstreams of a pre-training recipe's table, one per transfer mode and arm.

    Args:
        modes: :data:`~speechssl.tasks.classification.TRANSFER_MODES` names.
        encoder_config: the pre-trained architecture (the random baselines use it too).
        checkpoints: ``{arm: [checkpoint per pre-training seed]}``; ``pretrained_*`` modes
            give one row per arm, named after it (``pretrained_frozen``,
            ``sat_no_mixing_frozen``...).
        seeds: the downstream seeds.
        deterministic_head: the head adds no randomness (the probe): a fixed upstream
            then needs one seed, a random init one per seed, a pre-trained arm one per
            pre-training run.
        n_mels: bins of the FBANK upstream.
    """
    seeds = list(seeds)
    any_checkpoint = next((paths[0] for paths in checkpoints.values() if paths), None)
    upstreams = []
    for mode in modes:
        if mode not in TRANSFER_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {sorted(TRANSFER_MODES)}")
        head_mode = "finetune" if mode.endswith("finetune") else "frozen"
        fixed = deterministic_head and head_mode == "frozen"
        if not mode.startswith("pretrained"):

            def build(seed, mode=mode):
                make, _ = upstream_factory(
                    mode, encoder_config, any_checkpoint, n_mels=n_mels, seed=seed
                )
                return make()

            mode_seeds = seeds[:1] if fixed and mode == "fbank" else seeds
            upstreams.append(Upstream(mode, build, mode_seeds, head_mode))
            continue
        for arm, paths in checkpoints.items():
            paths = list(paths)
            name = mode if arm == "pretrained" else mode.replace("pretrained", arm)

            def build(seed, paths=paths, mode=mode):
                # pre-training run k serves downstream seed k (cycling when there are fewer)
                path = paths[seeds.index(seed) % len(paths)] if seed in seeds else paths[0]
                make, _ = upstream_factory(mode, encoder_config, path, n_mels=n_mels, seed=seed)
                return make()

            mode_seeds = seeds[: len(paths)] if fixed else seeds
            upstreams.append(Upstream(name, build, mode_seeds, head_mode))
    return upstreams


# ---------------------------------------------------------------------- tables and deltas
def _estimate(outcome: TaskOutcome, metric: str, num_resamples: int) -> Estimate:
    function, _ = METRICS[metric]
    return bootstrap_metric(
        function, outcome.y_true, outcome.predictions, num_resamples=num_resamples
    )


def _delta(a: TaskOutcome, b: TaskOutcome, metric: str, num_resamples: int) -> Delta:
    if not np.array_equal(a.y_true, b.y_true):
        raise ValueError(f"{a.task}: {a.upstream} and {b.upstream} were tested on different items")
    function, _ = METRICS[metric]
    return paired_bootstrap_delta(
        function, a.y_true, a.predictions, b.predictions, num_resamples=num_resamples
    )


def summarize(
    outcomes: Sequence[TaskOutcome],
    comparisons: Sequence[tuple[str, str]] = (),
    *,
    num_resamples: int = 1000,
) -> dict:
    """``{"table": [...], "deltas": [...]}`` for results.json (values in %).

    ``table`` rows: ``{"task", "metric", "upstream", "mean", "ci95": [lo, hi], "n_seeds",
    "n_items"}``. ``deltas`` rows, for each ``(a, b)`` of ``comparisons`` and each task
    both ran: ``{"task", "metric", "a", "b", "delta", "ci95", "better", "significant"}``
    where ``better`` names the better arm and ``significant`` says whether the CI
    excludes 0.
    """
    table, deltas = [], []
    by_key = {(outcome.task, outcome.upstream): outcome for outcome in outcomes}
    for outcome in outcomes:
        for metric in TASK_METRICS[outcome.task]:
            estimate = _estimate(outcome, metric, num_resamples)
            table.append(
                {
                    "task": outcome.task,
                    "metric": metric,
                    "upstream": outcome.upstream,
                    **estimate.as_dict(scale=100.0),
                    "n_items": len(outcome.y_true),
                    "seeds": list(outcome.seeds),
                }
            )
    tasks = list(dict.fromkeys(outcome.task for outcome in outcomes))
    for a, b in comparisons:
        for task in tasks:
            if (task, a) not in by_key or (task, b) not in by_key:
                continue
            for metric in TASK_METRICS[task]:
                delta = _delta(by_key[task, a], by_key[task, b], metric, num_resamples)
                higher_is_better = METRICS[metric][1]
                a_better = (delta.delta > 0) == higher_is_better
                deltas.append(
                    {
                        "task": task,
                        "metric": metric,
                        "a": a,
                        "b": b,
                        **delta.as_dict(scale=100.0),
                        "better": (a if a_better else b) if delta.delta != 0 else None,
                        "significant": excludes_zero(delta),
                    }
                )
    return {"table": table, "deltas": deltas}


METRIC_TITLES = {
    ("speaker_id", "accuracy"): "speaker ID top-1 (%)",
    ("speaker_verification", "eer"): "verification EER (%)",
    ("emotion", "accuracy"): "emotion WA (%)",
    ("emotion", "ua"): "emotion UA (%)",
    ("keyword", "accuracy"): "keyword accuracy (%)",
    ("classification", "accuracy"): "accuracy (%)",
    ("classification", "ua"): "UA (%)",
}


def summary_markdown(summary: dict) -> str:
    """The table (upstreams x task metrics, ``mean [lo, hi]``) and the deltas, in Markdown."""
    columns = list(dict.fromkeys((row["task"], row["metric"]) for row in summary["table"]))
    upstreams = list(dict.fromkeys(row["upstream"] for row in summary["table"]))
    cells = {(row["upstream"], row["task"], row["metric"]): row for row in summary["table"]}
    lines = [
        "| upstream | " + " | ".join(METRIC_TITLES[c] for c in columns) + " | seeds |",
        "| --- |" + " ---: |" * len(columns) + " ---: |",
    ]
    for upstream in upstreams:
        row_cells, seeds = [], set()
        for task, metric in columns:
            cell = cells.get((upstream, task, metric))
            if cell is None:
                row_cells.append("")
                continue
            row_cells.append(_format(cell["mean"], cell["ci95"]))
            seeds.add(cell["n_seeds"])
        lines.append(
            f"| {upstream} | " + " | ".join(row_cells) + f" | {'/'.join(map(str, sorted(seeds)))} |"
        )
    if summary["deltas"]:
        lines += [
            "",
            "| comparison | metric | delta [95 % CI] | CI excludes 0 |",
            "| --- | --- | ---: | --- |",
        ]
        for delta in summary["deltas"]:
            sign = "+" if delta["delta"] > 0 else ""
            lines.append(
                f"| {delta['a']} − {delta['b']} | {METRIC_TITLES[delta['task'], delta['metric']]} "
                f"| {sign}{_format(delta['delta'], delta['ci95'])} | "
                f"{'yes, ' + delta['better'] + ' better' if delta['significant'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def _format(mean: float, interval: Sequence[float]) -> str:
    return f"{mean:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"
