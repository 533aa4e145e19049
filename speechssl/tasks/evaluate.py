"""``speechssl evaluate UPSTREAM [UPSTREAM ...] --task ... --data ...``: the evaluation suite
from the shell.

An UPSTREAM is anything ``upstream=`` accepts: ``fbank``, a preset name (random weights,
one init per seed), a speechssl checkpoint or export, a fairseq/torchaudio file or a
Hugging Face folder; or ``random:<any of these but fbank>``: the same architecture at random
init (one per seed) with the original's weight-free front end (e.g. its CMVN statistics),
the baseline a pre-training claim must beat. The task reads ``--data``:

* ``emotion``: an IEMOCAP-layout folder (leave-one-session-out, WA/UA);
* ``speaker-id``: a VoxCeleb1-layout folder (``iden_split.txt``: train/dev/test, top-1);
* ``speaker-verification``: a VoxCeleb1-layout folder (``veri_test.txt`` trials, EER);
* ``keyword``: a Google Speech Commands-layout folder (``<word>/<speaker>_nohash_<k>``,
  ``validation_list.txt``/``testing_list.txt`` with no speaker in two splits; SUPERB KS
  style word accuracy); ``--data`` defaults to the demo's spoken digits;
* ``classify``: a training set (CSV ``path,label``, JSONL manifest or label folder) with
  ``--valid`` (or a stratified 10 % of train) and ``--test``.

Every upstream is scored on the same test items. It prints the table (``mean [95 % CI]``
over seeds and test items) and, with several upstreams, the paired deltas of the first
against each other one (A − B, A − C, ...: a paired bootstrap over the same items), and
writes ``OUT/results.json`` (``"table"``, ``"deltas"``, ``"details"``) and ``OUT/results.md``.

Example:
    speechssl evaluate fbank --task speaker-id --data /data/VoxCeleb1 --out runs/eval_fbank
    speechssl evaluate last.pt random:last.pt fbank --task emotion --data /data/IEMOCAP
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig, load_manifests, prepared_folder
from speechssl.demo import demo_path
from speechssl.encoders import PRESETS
from speechssl.heads import ClassifierHeadConfig
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.safe_io import claim_output_folder, write_text_atomic
from speechssl.tasks.classification import TransferConfig, random_init_like
from speechssl.tasks.speaker import read_trials
from speechssl.tasks.suite import Suite, TaskOutcome, Upstream, summarize, summary_markdown
from speechssl.tasks.user_data import FinetuneDataConfig, load_upstream, load_user_data
from speechssl.train.config import TrainerConfig

TASKS = ("emotion", "speaker-id", "speaker-verification", "keyword", "classify")
HEADS = ("probe", "mean_pool")
EMOTION_LABELS = ["neu", "hap", "ang", "sad"]
# ``random:<spec>``: the architecture of <spec> at random init, with its front-end statistics
RANDOM_PREFIX = "random:"


def add_task_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """``--task``, ``--data``, ``--valid``, ``--test`` and ``--out`` (read by :func:`score_task`)."""
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--data",
        help="corpus folder (or training set for classify); keyword: default the demo's",
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
    parser.add_argument(
        "upstream",
        nargs="+",
        help="fbank, a preset, a checkpoint, an export or HF folder, or random:<one of these>; "
        "with several, the first is compared with each other one",
    )
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


def command_upstream(
    spec: str, seeds: Sequence[int], *, deterministic_head: bool = True, n_mels: int = 80
) -> Upstream:
    """The :class:`Upstream` of one ``speechssl evaluate`` spec (opened here, so that a bad
    spec fails before any scoring).

    A random init (a preset, ``random:<spec>``) is a different encoder per seed; anything
    else is one fixed encoder, which the deterministic probe needs only once.

    Raises:
        ValueError: one line, prefixed with ``upstream=<spec>``.
    """
    spec = str(spec).strip()
    seeds = list(seeds)
    if spec.startswith(RANDOM_PREFIX):
        original = spec.removeprefix(RANDOM_PREFIX)
        encoder, kind = load_upstream(original, seed=seeds[0], n_mels=n_mels)
        if kind == "fbank":
            raise ValueError(f"upstream={spec}: fbank has no learned weights to re-initialise")
        name = RANDOM_PREFIX + (Path(original).name or original)
        return Upstream(name, lambda seed: random_init_like(encoder, seed), seeds)
    varies = spec in PRESETS or not deterministic_head
    seeds = seeds if varies else seeds[:1]
    fixed, _ = load_upstream(spec, seed=seeds[0], n_mels=n_mels)
    if spec in PRESETS:
        build = lambda seed: load_upstream(spec, seed=seed, n_mels=n_mels)[0]
    else:
        build = lambda seed: fixed
    return Upstream(name=Path(spec).name or spec, build=build, seeds=seeds)


def _distinct_names(upstreams: Sequence[Upstream], specs: Sequence[str]) -> None:
    """Rename repeated row names (two ``last.pt`` of different runs) after their full spec,
    then ``#2``, ``#3``...: tables and deltas are keyed by name."""
    taken: set[str] = set()
    for upstream, spec in zip(upstreams, specs):
        for candidate in (upstream.name, spec, *(f"{spec}#{k}" for k in range(2, 2 + len(specs)))):
            if candidate not in taken:
                upstream.name = candidate
                break
        taken.add(upstream.name)


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
    if task == "keyword":
        folder = prepared_folder("speech_commands", data, out / "data")
        splits = [load_manifests([folder / f"{name}.jsonl"]) for name in ("train", "dev", "test")]
        return suite.keyword(upstream, *splits)
    if test is None:
        raise ValueError("--task classify needs --test (and --valid, or 10% of train is held out)")
    user = load_user_data(
        FinetuneDataConfig(train=data, valid=valid, test=test), out / "data", seed=split_seed
    )
    train, valid_rows, test_rows = (
        Manifest.from_rows(rows) for rows in (user.train, user.valid, user.test)
    )
    return suite.classification(upstream, train, valid_rows, test_rows, user.labels)


def task_data(task: str, data: str | Path | None) -> Path:
    """``--data`` checked: it exists; the keyword task defaults to the demo's spoken digits."""
    if data is None:
        if task != "keyword":
            raise ValueError(f"--task {task} needs --data (a corpus folder or training set)")
        return demo_path("speech_commands")
    if not Path(data).exists():
        raise ValueError(f"--data: no such file or folder: {data}")
    return Path(data)


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
    data = task_data(args.task, args.data)
    # never over another command's or a run's files (a fine-tuning run's results.json)
    out = claim_output_folder(args.out, "evaluate", force=args.force)
    specs = [str(spec) for spec in args.upstream]
    upstreams = [
        command_upstream(
            spec, args.seeds, deterministic_head=args.head == "probe", n_mels=args.n_mels
        )
        for spec in specs
    ]
    _distinct_names(upstreams, specs)
    head = LinearProbeConfig() if args.head == "probe" else ClassifierHeadConfig()
    suite = command_suite(head, out, epochs=args.epochs, device=args.device)
    outcomes = [
        score_task(
            suite,
            upstream,
            args.task,
            data,
            out,
            valid=args.valid,
            test=args.test,
            split_seed=args.seeds[0],
        )
        for upstream in upstreams
    ]
    # A - B, A - C, ...: the first upstream against each other one, on the same items
    comparisons = [(upstreams[0].name, upstream.name) for upstream in upstreams[1:]]
    summary = summarize(outcomes, comparisons)
    markdown = summary_markdown(summary)
    out.mkdir(parents=True, exist_ok=True)
    details = {
        "task": outcomes[0].task,
        "head": args.head,
        "seeds": list(args.seeds),
        "upstreams": {
            outcome.upstream: {
                "spec": spec,
                "seeds": outcome.seeds,
                "seconds": outcome.seconds,
                "runs": outcome.details,
            }
            for spec, outcome in zip(specs, outcomes)
        },
    }
    write_text_atomic(
        out / "results.json",
        json.dumps({**summary, "details": details}, indent=2, default=str) + "\n",
    )
    write_text_atomic(out / "results.md", markdown)
    print("\n" + markdown + f"\nresults: {out / 'results.json'}")
    return 0
