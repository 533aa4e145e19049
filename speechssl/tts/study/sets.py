"""The study's test and training sets, in leakage-safe order.

:func:`split_target` holds the test sentences out first and drops every training row whose
normalised text equals a test sentence; only then does :func:`build_test_set` fit the
similarity vectorizer, on the remaining training text alone. :func:`pretraining_subsets`
cuts the multi-speaker pool into nested, seeded fractions.

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

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from speechssl.tts.similarity import OOD_BIN, SimilarityBins, TrainingTextSimilarity
from speechssl.tts.similarity import similarity_bins as make_bins
from speechssl.tts.subsets import nested_fractions
from speechssl.tts.text import normalize_text


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


def pool_stats(rows: Sequence[Mapping]) -> dict:
    """``{"utterances", "speakers", "hours"}`` of pool rows (``duration`` in seconds)."""
    return {
        "utterances": len(rows),
        "speakers": len({str(row.get("speaker", "unknown")) for row in rows}),
        "hours": sum(float(row["duration"]) for row in rows) / 3600,
    }


def select_pool(rows: Sequence[Mapping], max_duration: float = 0.0) -> tuple[list[dict], dict]:
    """The pre-training pool: whole utterances with a transcript and at most ``max_duration``
    seconds (0: any length), their text normalised by the model's front end
    (:func:`~speechssl.tts.text.normalize_text`; the source's text stays in ``raw_text``).
    Returns ``(rows, summary)``; the summary counts what was kept (``utterances``, ``hours``,
    ``speakers``) and dropped (``dropped_untranscribed``, ``dropped_long``).

    Example:
        >>> rows = [{"id": "a", "text": "DR. SMITH PAID $5", "duration": 4.0, "speaker": "1"},
        ...         {"id": "b", "text": "A LONG ONE", "duration": 14.0, "speaker": "2"},
        ...         {"id": "c", "duration": 3.0, "speaker": "2"}]
        >>> pool, summary = select_pool(rows, max_duration=10)
        >>> pool[0]["text"], summary["utterances"], summary["dropped_long"]
        ('doctor smith paid five dollars', 1, 1)
    """
    kept, untranscribed, long = [], 0, 0
    for row in rows:
        if not str(row.get("text") or "").strip():
            untranscribed += 1
        elif max_duration > 0 and float(row["duration"]) > max_duration:
            long += 1
        else:
            kept.append({**row, "text": normalize_text(row["text"]), "raw_text": row["text"]})
    summary = {
        **pool_stats(kept),
        "max_duration": max_duration,
        "dropped_untranscribed": untranscribed,
        "dropped_long": long,
    }
    return kept, summary


def pretraining_subsets(
    rows: Sequence[Mapping], fractions: Sequence[float], seed: int = 0, mode: str = "round_robin"
) -> dict[float, list[dict]]:
    """``{fraction: rows}``: nested, seeded subsets of the pre-training pool by speaker and
    utterance (see :func:`speechssl.tts.subsets.nested_fractions`); fraction 0 is empty."""
    by_id = {row["id"]: dict(row) for row in rows}
    pairs = [(row["id"], str(row.get("speaker", "unknown"))) for row in rows]
    subsets = nested_fractions(pairs, fractions=[float(f) for f in fractions], seed=seed, mode=mode)
    return {fraction: [by_id[uid] for uid in ids] for fraction, ids in subsets.items()}


def describe_sentences(sentences: Sequence[TestSentence]) -> list[dict]:
    """JSON-ready list of the test sentences."""
    return [asdict(sentence) for sentence in sentences]
