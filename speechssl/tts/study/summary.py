"""The study's statistics: per fraction x bin x metric means with 95 % bootstrap CIs over
training seeds and sentences (two levels: :func:`speechssl.stats.bootstrap_metric` resamples
the seeds, then the sentences), paired deltas between fractions and bin contrasts
(``results.json``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from speechssl.stats import (
    Estimate,
    bootstrap_metric,
    excludes_zero,
    paired_bootstrap_delta,
    unpaired_bootstrap_difference,
)
from speechssl.tts.similarity import OOD_BIN
from speechssl.tts.study.sets import TestSentence
from speechssl.tts.study.synthesis import METRICS

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


def sentence_estimate(values, num_resamples: int = 1000) -> Estimate:
    """Mean of per-sentence values with its 95 % bootstrap CI: ``values`` ``(N,)`` (one run:
    over sentences) or ``(S, N)`` (S training seeds x the same N sentences: resampling the
    seeds, then the sentences, :func:`speechssl.stats.bootstrap_metric`), so the interval
    widens with the seeds' spread.

    Example:
        >>> one = sentence_estimate([1.0, 2.0, 3.0, 4.0], num_resamples=200)
        >>> two = sentence_estimate([[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]], 200)
        >>> one.mean == two.mean, two.num_seeds, two.high - two.low > one.high - one.low
        (True, 2, True)
    """
    array = np.atleast_2d(np.asarray(values, dtype=np.float64))  # (S, N)
    return bootstrap_metric(_sentence_mean, array[0], list(array), num_resamples=num_resamples)


def _seed_matrices(members: Sequence[Mapping], metric: str, shared_with=None):
    """``(ids, (S, N) values)``: the sentences every seed scored (finite), one row a seed."""
    seeds = sorted({int(row.get("seed", 0)) for row in members})
    by_seed = {
        seed: _values([row for row in members if int(row.get("seed", 0)) == seed], metric)
        for seed in seeds
    }
    ids = set.intersection(*(set(values) for values in by_seed.values())) if by_seed else set()
    if shared_with is not None:
        ids &= set(shared_with)
    ids = sorted(ids)
    return ids, np.array([[values[key] for key in ids] for values in by_seed.values()])


def summarize(
    rows: Sequence[Mapping], bin_order: Sequence[str], *, num_resamples: int = 1000
) -> dict:
    """Per-sentence rows (with ``fraction``) -> ``{"table": [...], "deltas": [...]}``.

    ``table``: one row per fraction x bin x metric, ``{"fraction", "bin", "metric", "mean",
    "ci95": [lo, hi], "n_items", "n_seeds"}``: the mean over the training seeds (rows'
    ``seed``, 0 if absent) and the bin's sentences every seed scored, and its 95 % bootstrap
    CI resampling seeds, then sentences (:func:`sentence_estimate`). ``stopped`` is the
    share of sentences whose stop token fired.

    ``deltas``: for each bin and metric, ``a - b`` on the sentences both arms scored, with
    its paired 95 % bootstrap CI (:func:`speechssl.stats.paired_bootstrap_delta`: the same
    resampled sentences, each arm's seeds resampled), for every
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
            ids, values = _seed_matrices(members, metric)  # (S, N)
            if not ids:
                continue  # e.g. OOD sentences have no MCD
            estimate = sentence_estimate(values, num_resamples)
            row = {"fraction": fraction, "bin": name, "metric": metric}
            table.append({**row, **estimate.as_dict(), "n_items": len(ids)})
    comparisons = [(fraction, 0.0) for fraction in fractions if fraction > 0 and 0.0 in fractions]
    if 0.125 in fractions and 1.0 in fractions:
        comparisons.append((0.125, 1.0))
    deltas, differences = [], {}
    for a, b in comparisons:
        for name in bin_order:
            for metric in TABLE_METRICS:
                ids_a, _ = _seed_matrices(cells[a, name], metric)
                shared, values_b = _seed_matrices(cells[b, name], metric, shared_with=ids_a)
                if not shared:
                    continue
                _, values_a = _seed_matrices(cells[a, name], metric, shared_with=shared)
                # (n,) per sentence, each arm averaged over its seeds
                differences[a, b, name, metric] = values_a.mean(0) - values_b.mean(0)
                delta = paired_bootstrap_delta(
                    _sentence_mean, values_a[0], list(values_a), list(values_b),
                    num_resamples=num_resamples,
                )  # fmt: skip
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
