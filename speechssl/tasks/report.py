"""Result files of a recipe: ``results.json``, ``results.md`` and the plots beside them.

Example:
    >>> import tempfile
    >>> from speechssl.tasks.emotion import EmotionResults
    >>> results = EmotionResults(["neu", "ang"])
    >>> _ = results.add_fold("1", [0, 1, 1], [0, 1, 0])
    >>> table = write_emotion_report(tempfile.mkdtemp(), "demo", {"fbank": (results, [])})
    >>> print(table.splitlines()[2])
    | fbank | 66.67 ± 0.00 | 75.00 ± 0.00 | 1 |
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from speechssl.safe_io import write_text_atomic
from speechssl.tasks.emotion import EmotionResults
from speechssl.tasks.plots import (
    plot_confusion_matrix,
    plot_layer_weights,
    plot_metric_bars,
    plot_probe_layers,
)
from speechssl.tasks.suite import METRIC_TITLES, summary_markdown

__all__ = ["plot_layer_usage", "write_emotion_report", "write_results", "write_summary_report"]


def write_results(run_dir: str | Path, results: dict, markdown: str) -> None:
    """``run_dir/results.json`` (JSON-able ``results``) and ``run_dir/results.md``."""
    run_dir = Path(run_dir)
    # atomic: a full disk or a kill never leaves an earlier run's results half-overwritten
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    write_text_atomic(run_dir / "results.md", markdown)


def layer_readings(details: Sequence[dict]) -> tuple[list, list]:
    """Layer weights and probe per-layer dev accuracies found in a run's details (folds too)."""
    weights, probes = [], []
    for detail in details:
        for item in detail.get("folds", [detail]):
            if item.get("layer_weights") and len(item["layer_weights"]) > 1:
                weights.append(item["layer_weights"])
            if item.get("probe"):
                probes.append(item["probe"]["dev_accuracy_per_layer"])
    return weights, probes


def plot_layer_usage(run_dir: str | Path, outcomes) -> None:
    """Which layers each task read: ``layer_weights_<task>_<upstream>.png`` (trained heads'
    layer sums, averaged over seeds and folds) or ``probe_layers_<task>_<upstream>.png``
    (the probe's dev accuracy per hidden state, averaged likewise)."""
    run_dir = Path(run_dir)
    for outcome in outcomes:
        weights, probes = layer_readings(outcome.details)
        name = f"{outcome.task}_{outcome.upstream}"
        if weights:
            plot_layer_weights(
                np.mean(weights, axis=0),
                run_dir / f"layer_weights_{name}.png",
                title=f"{outcome.upstream}: {outcome.task} head's layer weights",
            )
        if probes and len(probes[0]) > 1:
            plot_probe_layers(
                np.mean(probes, axis=0),
                run_dir / f"probe_layers_{name}.png",
                title=f"{outcome.upstream}: {outcome.task} probe, dev accuracy per layer",
            )


def write_summary_report(
    run_dir: str | Path,
    title: str,
    summary: dict,
    *,
    notes: Sequence[str] = (),
    extra: dict | None = None,
) -> str:
    """Write a suite's table and deltas (:func:`speechssl.tasks.suite.summarize`).

    ``results.json`` holds ``title``, ``table``, ``deltas`` and ``extra``'s keys;
    ``results.md`` the Markdown table, deltas and ``notes``; ``results.png`` one bar per
    cell with its 95 % CI. Returns the Markdown of the table and deltas.
    """
    run_dir = Path(run_dir)
    table = summary_markdown(summary)
    bars = {}
    for row in summary["table"]:
        low, high = row["ci95"]
        label = (
            f"{row['upstream']}: {METRIC_TITLES[row['task'], row['metric']].replace(' (%)', '')}"
        )
        bars[label] = (row["mean"], (high - low) / 2)
    if bars:
        plot_metric_bars(bars, run_dir / "results.png", ylabel="% (bars: 95 % CI)", title=title)
    markdown = "\n".join([f"# {title}", "", table, *notes, ""])
    write_results(run_dir, {"title": title, **summary, **(extra or {})}, markdown)
    return table


def write_emotion_report(
    run_dir: str | Path,
    title: str,
    outcomes: Mapping[str, tuple[EmotionResults, Sequence[np.ndarray]]],
    descriptions: Mapping[str, str] | None = None,
    extra: dict | None = None,
) -> str:
    """Summarise leave-one-session-out runs of several upstreams (transfer modes).

    Writes ``results.json``/``results.md`` (a summary table, then per-mode fold tables and
    confusion matrices), ``confusion_<mode>.png``, ``layer_weights_<mode>.png`` (mean over
    folds, when the head learned layer weights) and ``accuracy.png`` (WA and UA per mode).
    Returns the summary table (markdown).
    """
    run_dir = Path(run_dir)
    descriptions = descriptions or {}
    rows = ["| upstream | WA (%) | UA (%) | folds |", "| --- | ---: | ---: | ---: |"]
    details, summaries, bars = [], {}, {}
    for mode, (results, layer_weights) in outcomes.items():
        summary = results.summary()
        wa = (100 * summary["wa_mean"], 100 * summary["wa_std"])
        ua = (100 * summary["ua_mean"], 100 * summary["ua_std"])
        rows.append(
            f"| {mode} | {wa[0]:.2f} ± {wa[1]:.2f} | {ua[0]:.2f} ± {ua[1]:.2f} | "
            f"{len(summary['folds'])} |"
        )
        bars[f"{mode} WA"], bars[f"{mode} UA"] = wa, ua
        plot_confusion_matrix(
            summary["confusion"],
            results.labels,
            run_dir / f"confusion_{mode}.png",
            title=f"{mode}: summed over folds",
        )
        weights = [w for w in layer_weights if np.size(w) > 1]  # one layer: nothing to weigh
        if weights:
            mean_weights = np.mean(np.stack(weights), axis=0)
            summary["layer_weights_mean"] = mean_weights.tolist()
            plot_layer_weights(
                mean_weights,
                run_dir / f"layer_weights_{mode}.png",
                title=f"{mode}: learned layer weights (mean over folds)",
            )
        summaries[mode] = summary
        heading = f"### {mode}" + (f": {descriptions[mode]}" if mode in descriptions else "")
        details += [heading, "", results.to_markdown()]
    table = "\n".join(rows) + "\n"
    plot_metric_bars(bars, run_dir / "accuracy.png", ylabel="%", title=title)
    markdown = "\n".join([f"# {title}", "", table, "## Per fold", "", *details])
    write_results(run_dir, {"title": title, "emotion": summaries, **(extra or {})}, markdown)
    return table
