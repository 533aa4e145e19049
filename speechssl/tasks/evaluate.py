"""``speechssl evaluate UPSTREAM --task ... --data ...``: the evaluation suite from the shell.

UPSTREAM is anything ``upstream=`` accepts: ``fbank``, a preset name (random weights,
one init per seed), a speechssl checkpoint or export, a fairseq/torchaudio file or a
Hugging Face folder. The task reads ``--data``:

* ``emotion``: an IEMOCAP-layout folder (leave-one-session-out, WA/UA);
* ``speaker-id``: a VoxCeleb1-layout folder (``iden_split.txt``: train/dev/test, top-1);
* ``speaker-verification``: a VoxCeleb1-layout folder (``veri_test.txt`` trials, EER);
* ``classify``: a training set (CSV ``path,label``, JSONL manifest or label folder) with
  ``--valid`` (or a stratified 10 % of train) and ``--test``.

It prints the table (``mean [95 % CI]`` over seeds and test items) and writes
``OUT/results.json`` (``"table"``, ``"details"``) and ``OUT/results.md``.

Example:
    speechssl evaluate fbank --task speaker-id --data /data/VoxCeleb1 --out runs/eval_fbank
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, load_manifests, prepared_folder
from speechssl.encoders import PRESETS
from speechssl.heads import ClassifierHeadConfig
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.safe_io import claim_output_folder
from speechssl.tasks.classification import TransferConfig
from speechssl.tasks.speaker import read_trials
from speechssl.tasks.suite import Suite, TaskOutcome, Upstream, summarize, summary_markdown
from speechssl.tasks.user_data import FinetuneDataConfig, load_upstream, load_user_data
from speechssl.train.config import TrainerConfig

TASKS = ("emotion", "speaker-id", "speaker-verification", "classify")
HEADS = ("probe", "mean_pool")
EMOTION_LABELS = ["neu", "hap", "ang", "sad"]


def add_task_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--task``, ``--data``, ``--valid``, ``--test`` and ``--out`` (read by :func:`score_task`)."""
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--data", required=True, help="corpus folder (or training set for classify)"
    )
    parser.add_argument("--valid", help="classify: validation set (default: 10%% of train)")
    parser.add_argument("--test", help="classify: test set")
    parser.add_argument(
        "--out",
        default=default_out,
        help="output folder: new, empty or this command's earlier output",
    )
    parser.add_argument(
        "--force", action="store_true", help="write into --out even if other files are there"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``speechssl evaluate``."""
    parser.add_argument("upstream", help="fbank, a preset, a checkpoint, an export or HF folder")
    add_task_arguments(parser, "runs/evaluate")
    parser.add_argument(
        "--head",
        default="probe",
        choices=HEADS,
        help="probe: converged logistic probe (default); mean_pool: SUPERB's trained head",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED")
    parser.add_argument("--epochs", type=int, default=60, help="mean_pool: most epochs")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--n-mels", type=int, default=80, help="bins of the fbank upstream")


def _upstream(args: argparse.Namespace) -> Upstream:
    spec = str(args.upstream)
    # a preset is a random init: each seed is a different encoder; anything else is one
    # fixed encoder, opened once (a bad upstream fails here), which the deterministic probe
    # needs only once
    varies = spec in PRESETS or args.head != "probe"
    seeds = list(args.seeds) if varies else list(args.seeds)[:1]
    fixed, _ = load_upstream(spec, seed=seeds[0], n_mels=args.n_mels)
    if spec in PRESETS:
        build = lambda seed: load_upstream(spec, seed=seed, n_mels=args.n_mels)[0]
    else:
        build = lambda seed: fixed
    return Upstream(name=Path(spec).name or spec, build=build, seeds=seeds)


def score_task(
    suite: Suite,
    upstream: Upstream,
    task: str,
    data: str | Path,
    out: str | Path,
    *,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    split_seed: int = 0,
) -> TaskOutcome:
    """Prepare ``data`` for one of :data:`TASKS` (under ``out/data``) and score ``upstream``.

    Shared by ``speechssl evaluate`` and ``speechssl probe-steps``.
    """
    out = Path(out)
    if task == "emotion":
        folder = prepared_folder("iemocap", data, out / "data")
        return suite.emotion(upstream, load_manifests([folder / "all.jsonl"]), EMOTION_LABELS)
    if task in ("speaker-id", "speaker-verification"):
        folder = prepared_folder("voxceleb1", data, out / "data")
        if task == "speaker-id":
            splits = [
                load_manifests([folder / f"{name}.jsonl"]) for name in ("train", "dev", "test")
            ]
            return suite.speaker_identification(upstream, *splits)
        return suite.speaker_verification(
            upstream,
            load_manifests([folder / "verification.jsonl"]),
            read_trials(folder / "trials.txt"),
        )
    if test is None:
        raise ValueError("--task classify needs --test (and --valid, or 10% of train is held out)")
    user = load_user_data(
        FinetuneDataConfig(train=data, valid=valid, test=test), out / "data", seed=split_seed
    )
    train, valid_rows, test_rows = (
        Manifest.from_rows(rows) for rows in (user.train, user.valid, user.test)
    )
    return suite.classification(upstream, train, valid_rows, test_rows, user.labels)


def command_suite(head, out: Path, *, epochs: int = 60, device: str = "cpu") -> Suite:
    """The suite the ``speechssl`` commands score with: 40 s batches of whole utterances
    (at most 15 s), no worker processes, one progress line per unit of work."""
    transfer = TransferConfig(
        epochs=epochs,
        data=DataConfig(max_batch_seconds=40.0, max_duration=15.0, num_workers=0),
        trainer=TrainerConfig(device=device, log_every=100, num_workers=0),
    )
    return Suite(head, transfer, out, progress=print)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``speechssl evaluate``."""
    if args.epochs < 1 or any(seed < 0 for seed in args.seeds):
        raise ValueError("--epochs must be >= 1 and --seeds non-negative")
    if not Path(args.data).exists():
        raise ValueError(f"--data: no such file or folder: {args.data}")
    upstream = _upstream(args)
    # never over another command's or a run's files (a fine-tuning run's results.json)
    out = claim_output_folder(args.out, "evaluate", force=args.force)
    head = LinearProbeConfig() if args.head == "probe" else ClassifierHeadConfig()
    suite = command_suite(head, out, epochs=args.epochs, device=args.device)
    outcome = score_task(
        suite,
        upstream,
        args.task,
        args.data,
        out,
        valid=args.valid,
        test=args.test,
        split_seed=args.seeds[0],
    )
    summary = summarize([outcome])
    markdown = summary_markdown(summary)
    out.mkdir(parents=True, exist_ok=True)
    details = {
        "task": outcome.task,
        "upstream": str(args.upstream),
        "seeds": outcome.seeds,
        "head": args.head,
        "seconds": outcome.seconds,
        "runs": outcome.details,
    }
    (out / "results.json").write_text(
        json.dumps({**summary, "details": details}, indent=2, default=str) + "\n"
    )
    (out / "results.md").write_text(markdown)
    print("\n" + markdown + f"\nresults: {out / 'results.json'}")
    return 0
