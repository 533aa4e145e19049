"""The study's statistics: per fraction x bin x metric means with 95 % bootstrap CIs over
sentences, paired deltas between fractions and bin contrasts (``results.json``)."""

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
