"""``speechssl probe-steps CHECKPOINTS --task ... --data ...``: what pre-training adds, step by step.

A pre-training run's table says whether its final encoder beats a random one; this says
*where* and *when*. Every step checkpoint of a run (``step_XXXXXXXX.pt`` in a trainer's
``checkpoints`` folder), and the same architecture at random init as step 0, is scored on a
task with the evaluation suite's converged logistic probe: the test metric (with its 95 % CI
over test items) and the probe's dev accuracy on every hidden state. A layer whose accuracy
rises over the steps learnt something the task reads; a run whose every layer falls is
trading the task's cue for its objective. Speaker verification has no probe (cosine scoring),
so it gives the EER per step only.

Writes ``OUT/probe_steps.json`` (``{"task", "metric", "steps": [{"step", "checkpoint",
"mean", "ci95", "n_items", "dev_accuracy_per_layer", "dev_accuracy_layer_average"}]}``), ``OUT/probe_steps.md`` and
``OUT/probe_steps.png`` (dev accuracy per layer against the step, one line per layer, and the
test metric with its CI band).

Example:
    speechssl probe-steps runs/hubert_sat/pretrain/pretrained/checkpoints \\
        --task speaker-id --data speechssl/demo_data/VoxCeleb1 --out runs/probe_steps
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.loading import load_encoder
from speechssl.safe_io import claim_output_folder, write_text_atomic
from speechssl.tasks.classification import random_init_like
from speechssl.tasks.evaluate import add_task_arguments, command_suite, score_task, task_data
from speechssl.tasks.plots import plot_probe_over_steps
from speechssl.tasks.report import layer_readings
from speechssl.tasks.suite import METRIC_TITLES, TaskOutcome, Upstream, summarize
from speechssl.train.checkpoint import list_checkpoints

_STEP = re.compile(r"step_(\d+)\.pt$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``speechssl probe-steps``."""
    parser.add_argument(
        "checkpoints", help="a trainer's checkpoints folder (step_XXXXXXXX.pt files)"
    )
    add_task_arguments(parser, "runs/probe_steps")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the step-0 random init (the data split too)"
    )
    parser.add_argument(
        "--no-random-init", action="store_true", help="skip step 0 (the random init)"
    )


def checkpoints_by_step(folder: str | Path) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of a checkpoints folder, oldest first; one line if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of step checkpoints")
    found = [(int(_STEP.search(path.name).group(1)), path) for path in list_checkpoints(folder)]
    if not found:
        raise ValueError(f"{folder}: no step_XXXXXXXX.pt checkpoints in it")
    return found


def step_row(step: int, checkpoint: str, outcome: TaskOutcome, num_hidden_states: int) -> dict:
    """One step's reading: the task's first metric (mean, CI) and the probe's dev accuracy
    per hidden state (and on their average, when the probe tried it), averaged over its fits
    (emotion: one per held-out session)."""
    cell = summarize([outcome])["table"][0]
    _, probes = layer_readings(outcome.details)
    dev = np.mean(probes, axis=0).tolist() if probes else []
    return {
        "step": step,
        "checkpoint": checkpoint,
        "task": cell["task"],
        "metric": cell["metric"],
        "mean": cell["mean"],
        "ci95": cell["ci95"],
        "n_items": cell["n_items"],
        "dev_accuracy_per_layer": dev[:num_hidden_states],
        "dev_accuracy_layer_average": dev[num_hidden_states]
        if len(dev) > num_hidden_states
        else None,
    }


def probe_over_steps(
    score: Callable[[Upstream], TaskOutcome],
    checkpoints: Sequence[tuple[int, Path]],
    *,
    seed: int = 0,
    include_random_init: bool = True,
    progress: Callable[[str], None] = print,
) -> list[dict]:
    """Score each checkpoint's encoder (and a random init of it as step 0) with ``score``.

    Args:
        score: scores one upstream on the task (e.g. :func:`score_task` bound to a suite).
        checkpoints: ``[(step, path)]`` as :func:`checkpoints_by_step` gives them.
        seed: the random init's seed.
        include_random_init: include step 0.

    Returns:
        One :func:`step_row` per step, oldest first.
    """
    rows = []
    for index, (step, path) in enumerate(checkpoints):
        encoder = load_encoder(path)
        hidden_states = encoder.num_layers + 1
        if index == 0 and include_random_init:
            # the front end of the last checkpoint, as the recipes' random baseline takes
            # the final model's
            fresh = random_init_like(load_encoder(checkpoints[-1][1]), seed)
            outcome = score(Upstream("step_0", lambda _seed, e=fresh: e, [seed]))
            rows.append(step_row(0, f"random init (seed {seed})", outcome, hidden_states))
            progress(f"step 0 (random init): {rows[-1]['metric']} {rows[-1]['mean']:.1f}")
        outcome = score(Upstream(f"step_{step}", lambda _seed, e=encoder: e, [seed]))
        rows.append(step_row(step, str(path), outcome, hidden_states))
        progress(f"step {step}: {rows[-1]['metric']} {rows[-1]['mean']:.1f}")
    return rows


def steps_markdown(task: str, rows: Sequence[dict]) -> str:
    """The table: one row per step, the metric with its CI and the dev accuracy per layer."""
    layers = max(len(row["dev_accuracy_per_layer"]) for row in rows)
    title = METRIC_TITLES.get((task, rows[0]["metric"]), rows[0]["metric"])
    average = any(row["dev_accuracy_layer_average"] is not None for row in rows)
    header = f"| step | {title} |" + "".join(f" layer {i} |" for i in range(layers))
    header += " average |" if average else ""
    lines = [header, "|" + " --- |" * (2 + layers + average)]
    for row in rows:
        low, high = row["ci95"]
        values = row["dev_accuracy_per_layer"]
        if average:
            average_value = row["dev_accuracy_layer_average"]
            values = [*values, float("nan") if average_value is None else average_value]
        cells = "".join(f" {100 * value:.1f} |" for value in values)
        lines.append(f"| {row['step']} | {row['mean']:.1f} [{low:.1f}, {high:.1f}] |{cells}")
    note = "layer columns: the probe's dev accuracy (%) on each hidden state (0 = the input)" + (
        "; average: on the average of all hidden states" if average else ""
    )
    return "\n".join(lines) + ("\n\n" + note if layers else "") + "\n"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``speechssl probe-steps``."""
    data = task_data(args.task, args.data)
    checkpoints = checkpoints_by_step(args.checkpoints)
    out = claim_output_folder(args.out, "probe-steps", force=args.force)
    suite = command_suite(LinearProbeConfig(), out)

    def score(upstream: Upstream) -> TaskOutcome:
        return score_task(
            suite,
            upstream,
            args.task,
            data,
            out,
            valid=args.valid,
            test=args.test,
            split_seed=args.seed,
        )

    rows = probe_over_steps(
        score, checkpoints, seed=args.seed, include_random_init=not args.no_random_init
    )
    out.mkdir(parents=True, exist_ok=True)
    task = rows[0]["task"]
    result = {"task": task, "metric": rows[0]["metric"], "steps": rows}
    write_text_atomic(out / "probe_steps.json", json.dumps(result, indent=2) + "\n")
    markdown = steps_markdown(task, rows)
    write_text_atomic(out / "probe_steps.md", markdown)
    plot_probe_over_steps(rows, out / "probe_steps.png", title=f"{task} over pre-training steps")
    print("\n" + markdown + f"\nresults: {out / 'probe_steps.json'}")
    return 0
