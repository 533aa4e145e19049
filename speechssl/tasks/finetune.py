"""A fine-tuned classifier's scores and the finetune recipe's outputs.

:func:`score_predictions` turns a set's predictions into accuracy and UA with 95 % CIs
(a bootstrap over the set's utterances: one fine-tuning run), per-class scores and
per-file predictions; :func:`write_finetune_outputs` writes ``results.json``/``.md``,
the confusion matrix, the classification report and ``predictions.csv``;
:func:`budget_line` says how far training went. ``recipes/finetune/run.py`` wires them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from sklearn.metrics import classification_report

from speechssl.stats import bootstrap_metric
from speechssl.tasks.classification import Predictions
from speechssl.tasks.metrics import confusion_matrix, unweighted_accuracy, weighted_accuracy
from speechssl.tasks.plots import plot_confusion_matrix
from speechssl.tasks.report import write_results

__all__ = ["budget_line", "score_predictions", "write_finetune_outputs"]


def budget_line(report: Mapping) -> str:
    """One sentence on how far training went (and a warning when it was still improving).

    ``report``: ``train_classifier``'s ``result["training"]``: a trained head's
    (``epochs``, ``max_epochs``, ``steps``, ``best_epoch``, ``stop``, ``still_improving``,
    optionally ``monitor``), or the probe's (``head``, ``layer``, ``c``, ``dev_accuracy``).

    Example:
        >>> print(budget_line({"epochs": 12, "max_epochs": 60, "steps": 96, "best_epoch": 7,
        ...                    "stop": "plateau", "still_improving": False}))
        Trained 12 of at most 60 epochs (96 steps); best valid accuracy at epoch 7; stopped on the dev plateau.
        >>> print(budget_line({"head": "linear_probe", "layer": -1, "c": 0.1,
        ...                    "dev_accuracy": 0.75}))
        Linear probe on the average of the hidden states, C=0.1, chosen on valid (accuracy 75.0 %).
    """
    if report.get("head") == "linear_probe":
        layer = report["layer"]
        where = "the average of the hidden states" if layer == -1 else f"hidden state {layer}"
        return (
            f"Linear probe on {where}, C={report['c']:g}, chosen on valid "
            f"(accuracy {100 * report['dev_accuracy']:.1f} %)."
        )
    monitor = "loss" if report.get("monitor") == "valid_loss" else "accuracy"
    line = (
        f"Trained {report['epochs']:g} of at most {report['max_epochs']} epochs "
        f"({report['steps']} steps); best valid {monitor} at epoch {report['best_epoch']}; "
        f"stopped on the {'dev plateau' if report['stop'] == 'plateau' else 'epoch cap'}."
    )
    if report["still_improving"]:
        line += f" Valid {monitor} was still improving: raise transfer.epochs."
    return line


def score_predictions(
    rows: Sequence[dict], predictions: Predictions, labels: Sequence[str]
) -> dict:
    """Accuracy, UA (each with a 95 % CI), per-class precision/recall/F1, the confusion
    matrix and per-file predictions of ``rows`` (in the order ``predictions`` holds them).

    Args:
        rows: the manifest rows scored (``id``, ``audio``, ``label``).
        predictions: :func:`speechssl.tasks.classification.predict` on those rows.
        labels: class names, in index order.

    Example:
        >>> import torch
        >>> rows = [{"id": str(i), "audio": f"{i}.wav", "label": "ab"[i % 2]} for i in range(4)]
        >>> probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
        >>> predictions = Predictions(torch.tensor([0, 1, 0, 1]), probabilities.argmax(1),
        ...                           probabilities)
        >>> score = score_predictions(rows, predictions, ["a", "b"])
        >>> score["accuracy"], score["confusion_matrix"], score["predictions"][3]["predicted"]
        (0.75, [[2, 0], [1, 1]], 'a')
    """
    y_true, y_pred = predictions.y_true.numpy(), predictions.y_pred.numpy()
    # one fine-tuning run: the interval is the test set's (bootstrap over its utterances)
    intervals = {
        name: bootstrap_metric(metric, y_true, [y_pred]).as_dict(scale=1.0)["ci95"]
        for name, metric in (("accuracy", weighted_accuracy), ("ua", unweighted_accuracy))
    }
    indices = list(range(len(labels)))
    report = classification_report(
        y_true, y_pred, labels=indices, target_names=labels, output_dict=True, zero_division=0
    )
    text = classification_report(
        y_true, y_pred, labels=indices, target_names=labels, digits=4, zero_division=0
    )
    per_file = [
        {
            "id": row["id"],
            "path": row["audio"],
            "label": row["label"],
            "predicted": labels[int(predicted)],
            "probabilities": dict(zip(labels, [round(float(p), 6) for p in probabilities])),
        }
        for row, predicted, probabilities in zip(rows, y_pred, predictions.probabilities)
    ]
    return {
        "accuracy": weighted_accuracy(y_true, y_pred),
        "accuracy_ci95": intervals["accuracy"],
        "unweighted_accuracy": unweighted_accuracy(y_true, y_pred),
        "unweighted_accuracy_ci95": intervals["ua"],
        "per_class": {label: report[label] for label in labels},
        "num_utterances": len(rows),
        "confusion_matrix": confusion_matrix(y_true, y_pred, len(labels)).tolist(),
        "report_text": text,
        "predictions": per_file,
    }


def write_finetune_outputs(
    run_dir: str | Path, summary: dict, scores: Mapping[str, dict], labels: Sequence[str]
) -> str:
    """Write a fine-tuning run's outputs into ``run_dir``; return the markdown table.

    ``results.json`` (``summary``, ``eval_set``, the main set's accuracy, UA and per-class
    scores, and each set's scores without its report text and per-file predictions),
    ``results.md``, ``confusion_matrix.png`` and ``classification_report.txt`` of the main
    set (``test`` if scored, else ``valid``), and ``predictions.csv`` (one row per file of
    every set, with each class's probability).

    Args:
        run_dir: the run folder.
        summary: what the run records (``upstream``, ``upstream_kind``, ``head_mode``,
            ``num_train``, ``num_valid``, ``valid_source``, ``budget_line``, ...).
        scores: ``{"valid": ..., "test": ...}`` from :func:`score_predictions`.
        labels: class names, in index order.
    """
    run_dir = Path(run_dir)
    eval_name = "test" if "test" in scores else "valid"
    main = scores[eval_name]
    plot_confusion_matrix(
        main["confusion_matrix"],
        labels,
        run_dir / "confusion_matrix.png",
        title=f"{eval_name} set ({main['num_utterances']} utterances)",
    )
    (run_dir / "classification_report.txt").write_text(
        f"{eval_name} set, upstream {summary['upstream']}\n\n{main['report_text']}"
    )
    with open(run_dir / "predictions.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["set", "path", "label", "predicted", *(f"p_{label}" for label in labels)])
        for name, score in scores.items():
            for row in score["predictions"]:
                writer.writerow(
                    [
                        name,
                        row["path"],
                        row["label"],
                        row["predicted"],
                        *row["probabilities"].values(),
                    ]
                )
    results = {
        **summary,
        "eval_set": eval_name,
        "accuracy": main["accuracy"],
        "unweighted_accuracy": main["unweighted_accuracy"],
        "per_class": main["per_class"],
        **{
            name: {
                key: value
                for key, value in score.items()
                if key not in ("report_text", "predictions")
            }
            for name, score in scores.items()
        },
    }
    rows = [
        "| set | utterances | accuracy (%) [95 % CI] | UA (%) [95 % CI] |",
        "| --- | ---: | ---: | ---: |",
    ]

    def cell(score: dict, key: str) -> str:
        low, high = score[f"{key}_ci95"]
        return f"{100 * score[key]:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    for name, score in scores.items():
        rows.append(
            f"| {name} | {score['num_utterances']} | {cell(score, 'accuracy')} | "
            f"{cell(score, 'unweighted_accuracy')} |"
        )
    table = "\n".join(rows)
    markdown = (
        f"# Fine-tuning: {summary['upstream']} ({summary['upstream_kind']}, head {summary['head_mode']})\n\n"
        f"Classes: {', '.join(labels)}. Train {summary['num_train']} utterances, valid "
        f"{summary['num_valid']} ({summary['valid_source']}). {summary['budget_line']}\n\n"
        f"{table}\n\n## Per class ({eval_name})\n\n```\n{main['report_text']}```\n\n"
        "![confusion matrix](confusion_matrix.png)\n"
    )
    write_results(run_dir, results, markdown)
    return table
