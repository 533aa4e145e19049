"""The study's Markdown tables (``results.md``) and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from speechssl.tts.plots import plot_alignments, plot_dev_curves, plot_metric_vs_fraction
from speechssl.tts.similarity import SimilarityBins
from speechssl.tts.study.summary import TABLE_METRICS
from speechssl.tts.study.synthesis import METRICS
from speechssl.tts.study.training import SELECT_ON


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
