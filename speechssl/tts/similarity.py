"""Text similarity of test sentences to the target speaker's *training* text, and its bins.

A :class:`TrainingTextSimilarity` fits ``TfidfVectorizer(analyzer="char_wb",
ngram_range=(2, 4))`` on the training sentences only (so no n-gram seen only in test text
enters the vocabulary or the IDF weights); a test sentence's score is its largest cosine
similarity to any training sentence (1.0 for a sentence that also occurs in training).
:func:`similarity_bins` cuts the scores into bins at quantile thresholds (or given ones);
out-of-domain sentences form their own bin, ``"ood"``, whatever their score.

Example:
    >>> similarity = TrainingTextSimilarity(["the cat sat on the mat", "dogs bark at night"])
    >>> scores = similarity.score(["the cat sat on the mat", "a cat sat on a hat", "quantum flux"])
    >>> [round(value, 2) for value in scores]
    [1.0, 0.62, 0.0]
    >>> bins = similarity_bins(scores, thresholds=[0.3, 0.9])
    >>> bins.labels, bins.names
    (['high', 'mid', 'low'], ['low', 'mid', 'high'])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from speechssl.tts.text import normalize_text

__all__ = ["OOD_BIN", "SimilarityBins", "TrainingTextSimilarity", "similarity_bins"]

OOD_BIN = "ood"


class TrainingTextSimilarity:
    """Character n-gram TF-IDF fitted on training sentences; scores test sentences against them.

    Args:
        training_texts: the target speaker's training sentences (the only text fitted).
        ngram_range: character n-gram sizes (within word boundaries, ``char_wb``).
        normalize: run :func:`~speechssl.tts.text.normalize_text` first, so ``"Dr."`` and
            ``"doctor"`` or ``"23"`` and ``"twenty-three"`` match as the model reads them.
    """

    def __init__(
        self,
        training_texts: Sequence[str],
        ngram_range: tuple[int, int] = (2, 4),
        normalize: bool = True,
    ) -> None:
        if isinstance(training_texts, str) or len(training_texts) == 0:
            raise ValueError("training_texts must be a non-empty list of sentences")
        self.normalize = normalize
        self.training_texts = [self._prepare(text) for text in training_texts]
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(ngram_range))
        self.training_matrix = self.vectorizer.fit_transform(self.training_texts)

    def _prepare(self, text: str) -> str:
        return normalize_text(text) if self.normalize else text

    @property
    def vocabulary(self) -> set[str]:
        """The n-grams the vectorizer knows: all come from the training text."""
        return set(self.vectorizer.vocabulary_)

    def score(self, texts: Sequence[str]) -> list[float]:
        """Max cosine similarity of each text to the training sentences, in ``[0, 1]``."""
        if isinstance(texts, str):
            raise TypeError("score expects a list of sentences, not one string")
        if len(texts) == 0:
            return []
        # transform only: unseen n-grams are ignored, nothing is refitted
        matrix = self.vectorizer.transform([self._prepare(text) for text in texts])
        similarities = cosine_similarity(matrix, self.training_matrix)  # (N_test, N_train)
        return [float(value) for value in similarities.max(axis=1).clip(0.0, 1.0)]

    def nearest(self, text: str) -> tuple[int, float]:
        """Index of the most similar training sentence and the cosine."""
        matrix = self.vectorizer.transform([self._prepare(text)])
        similarities = cosine_similarity(matrix, self.training_matrix)[0]
        index = int(similarities.argmax())
        return index, float(similarities[index])


@dataclass
class SimilarityBins:
    """Bin labels per sentence plus the thresholds that made them (written into results).

    Attributes:
        labels: one bin name per input sentence (``OOD_BIN`` for out-of-domain ones).
        names: the in-domain bin names, lowest similarity first.
        thresholds: the ``num_bins - 1`` cut points; bin ``i`` holds
            ``thresholds[i - 1] <= score < thresholds[i]`` (the top bin includes 1.0).
        scores: the scores that were binned.
    """

    labels: list[str]
    names: list[str]
    thresholds: list[float]
    scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready record: names, thresholds, per-bin counts."""
        counts = {name: self.labels.count(name) for name in [*self.names, OOD_BIN]}
        return {"names": self.names, "thresholds": self.thresholds, "counts": counts}


def _default_names(num_bins: int) -> list[str]:
    if num_bins == 2:
        return ["low", "high"]
    if num_bins == 3:
        return ["low", "mid", "high"]
    return [f"bin{index}" for index in range(num_bins)]


def similarity_bins(
    scores: Sequence[float],
    num_bins: int = 3,
    thresholds: Sequence[float] | None = None,
    out_of_domain: Sequence[bool] | None = None,
    names: Sequence[str] | None = None,
) -> SimilarityBins:
    """Bin similarity scores; thresholds default to the in-domain scores' quantiles.

    Args:
        scores: one score per sentence.
        num_bins: bins for in-domain sentences (ignored when ``thresholds`` is given).
        thresholds: explicit increasing cut points (``len = bins - 1``).
        out_of_domain: per-sentence flags; flagged sentences get ``OOD_BIN`` and do not enter
            the quantiles.
        names: bin names, lowest similarity first (default ``low/mid/high`` for 3 bins).
    """
    values = np.asarray(scores, dtype=np.float64)
    flags = np.zeros(len(values), bool) if out_of_domain is None else np.asarray(out_of_domain)
    if flags.shape != values.shape:
        raise ValueError("out_of_domain needs one flag per score")
    in_domain = values[~flags]
    if thresholds is None:
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        if len(in_domain) == 0:
            raise ValueError("no in-domain score to take quantiles from; pass thresholds")
        quantiles = np.linspace(0.0, 1.0, num_bins + 1)[1:-1]
        cut_points = [float(value) for value in np.quantile(in_domain, quantiles)]
    else:
        cut_points = [float(value) for value in thresholds]
        if any(b <= a for a, b in itertools.pairwise(cut_points)):
            raise ValueError(f"thresholds must increase strictly, got {cut_points}")
    bin_names = list(names) if names is not None else _default_names(len(cut_points) + 1)
    if len(bin_names) != len(cut_points) + 1:
        raise ValueError(f"need {len(cut_points) + 1} bin names, got {len(bin_names)}")
    # right=True would put a score equal to a threshold below it; bins are [t_{i-1}, t_i)
    indices = np.searchsorted(np.asarray(cut_points), values, side="right")
    labels = [
        OOD_BIN if flag else bin_names[index] for flag, index in zip(flags, indices, strict=True)
    ]
    return SimilarityBins(labels, bin_names, cut_points, [float(value) for value in values])
