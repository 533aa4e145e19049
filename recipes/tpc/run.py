"""Transformer predictive coding (Lian et al., 2018) -> IEMOCAP-style emotion recognition.

    python recipes/tpc/run.py                # whole recipe on the embedded demo corpus
    python recipes/tpc/run.py debug=tiny     # a few steps of every stage

Stages: prepare (LibriSpeech-style pre-training audio, IEMOCAP-style emotion set) ->
pre-train a causal Transformer to predict log-mel frames n steps ahead -> leave-one-
session-out emotion recognition with the same head on FBANK, the random-weight encoder,
the frozen pre-trained encoder and the fine-tuned pre-trained encoder -> results.md,
results.json and plots in ``run_dir``. See recipes/tpc/README.md.

Under ``torchrun --nproc_per_node=N`` rank 0 prepares the data while the other ranks wait,
every rank pre-trains (DDP), and rank 0 alone runs the emotion folds and the report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from speechssl.config import CONF_DIR, register_configs
from speechssl.data.loaders import load_manifests, prepare_once
from speechssl.encoders import build_encoder
from speechssl.errors import run_hydra_main, run_recipe, source_folder_problems
from speechssl.heads import head_config
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.objectives import build_objective
from speechssl.tasks.classification import TRANSFER_MODES, TransferConfig
from speechssl.tasks.door import label_problems, mode_problems, seed_problems, validation_problems
from speechssl.tasks.evaluate import score_task
from speechssl.tasks.plots import plot_confusion_matrix
from speechssl.tasks.report import plot_layer_usage, write_summary_report
from speechssl.tasks.suite import Suite, summarize, transfer_upstreams
from speechssl.train import distributed
from speechssl.train.config import TrainerConfig
from speechssl.train.pretrain import pretrain_on_manifests
from speechssl.typed import to_dataclass, to_plain

register_configs()


def prepared_manifests(sources, run_dir: Path, split_key: str) -> list[Path]:
    """Prepare every source corpus once; the manifests of its ``split_key`` splits."""
    paths = []
    for source in sources:
        data_dir = run_dir / "data" / source.corpus
        prepare_once(source.corpus, source.src, data_dir, verify=source.verify_audio)
        paths += [data_dir / f"{split}.jsonl" for split in source[split_key]]
    return paths


def pretrain(cfg: DictConfig, run_dir: Path, seed: int | None = None) -> tuple[Path, dict]:
    """One pre-training run: seeded with ``cfg.seed`` under ``run_dir/pretrain``, or with
    ``seed`` (one of ``pretrain_seeds``) under ``run_dir/pretrain/seed_<seed>``."""
    out = run_dir / "pretrain" if seed is None else run_dir / "pretrain" / f"seed_{seed}"
    seed = cfg.seed if seed is None else seed
    # {corpus: shards, src: DIR}: a speechssl shard or lhotse Shar directory, streamed
    shards = [source.src for source in cfg.pretrain.sources if source.corpus == "shards"]
    corpora = [source for source in cfg.pretrain.sources if source.corpus != "shards"]
    if shards and corpora:
        raise ValueError("pretrain.sources: pool shard directories or corpora, not both")
    # rank 0 prepares the corpora; the other ranks then find them prepared
    with distributed.main_process_first("data preparation"):
        train_paths = prepared_manifests(corpora, run_dir, "train_splits")
        valid_paths = prepared_manifests(corpora, run_dir, "valid_splits")
    train = load_manifests(train_paths) if train_paths else None
    valid = load_manifests(valid_paths) if valid_paths else None
    # the initial weights come from the seed alone (torch's global generator starts at random)
    torch.manual_seed(seed)
    encoder = build_encoder(cfg.encoder)
    model = build_objective(cfg.objective, encoder)
    data = f"{len(train)} utterances, {train.total_duration / 3600:.2f} h" if train else shards
    print(
        f"pre-training {encoder.family} ({sum(p.numel() for p in encoder.parameters()):,} "
        f"parameters) on {data}"
    )
    return pretrain_on_manifests(
        model,
        train,
        valid,
        cfg.data,
        cfg.trainer,
        cfg.optim,
        out,
        full_config=cfg,
        seed=seed,
        train_shards=shards,
    )


def transfer(cfg: DictConfig, run_dir: Path, checkpoints: list[Path]) -> dict:
    """Emotion LOSO for every upstream and seed, keywords for the frozen; the summary."""
    source = cfg.emotion
    data_dir = run_dir / "data" / source.corpus
    prepare_once(source.corpus, source.src, data_dir)
    manifest = load_manifests([data_dir / "all.jsonl"])
    config = to_dataclass(cfg.transfer, TransferConfig)
    trainer = to_dataclass(cfg.trainer, TrainerConfig)
    config = dataclasses.replace(
        config, trainer=dataclasses.replace(trainer, log_every=min(trainer.log_every, 10))
    )
    head = head_config(cfg.head)
    suite = Suite(head, config, run_dir / "transfer", progress=print)
    upstreams = transfer_upstreams(
        list(source.modes),
        to_plain(cfg.encoder),
        {"pretrained": checkpoints},
        list(cfg.seeds),
        deterministic_head=isinstance(head, LinearProbeConfig),
        n_mels=cfg.encoder.n_mels,
    )
    if cfg.finetune_seeds is not None:
        # fine-tuning is the grid's costly cell: it runs its own (shorter) list of seeds
        for upstream in upstreams:
            if upstream.mode == "finetune":
                upstream.seeds = list(cfg.finetune_seeds)
    outcomes = []
    for upstream in upstreams:
        print(
            f"\n== {upstream.name}: {TRANSFER_MODES[upstream.name]} (seeds {list(upstream.seeds)})"
        )
        outcomes.append(
            suite.emotion(
                upstream,
                manifest,
                list(source.labels),
                validation=source.validation,
                max_folds=source.max_folds,
            )
        )
    if cfg.keyword.src is not None:
        # speaker-independent spoken words: the content task filterbank statistics do not
        # solve; the frozen upstreams under the probe
        for upstream in upstreams:
            if upstream.mode == "frozen":
                outcomes.append(score_task(suite, upstream, "keyword", cfg.keyword.src, run_dir))
    names = [upstream.name for upstream in upstreams]
    comparisons = [
        (name, baseline)
        for name in names
        if name.startswith("pretrained")
        for baseline in ("random_frozen", "fbank")
        if baseline in names
    ]
    plot_layer_usage(run_dir, outcomes)
    summary = summarize(outcomes, comparisons)
    summary["emotion"] = {}
    summary["keyword"] = {
        outcome.upstream: {"seeds": outcome.seeds, "runs": outcome.details}
        for outcome in outcomes
        if outcome.task == "keyword"
    }
    for outcome in outcomes:
        if outcome.task != "emotion":
            continue
        first = outcome.details[0]["loso"]  # the first seed's folds and confusion matrix
        plot_confusion_matrix(
            first["confusion"],
            first["labels"],
            run_dir / f"confusion_{outcome.upstream}.png",
            title=f"{outcome.upstream} (seed {outcome.seeds[0]})",
        )
        summary["emotion"][outcome.upstream] = {
            "seeds": outcome.seeds,
            "head": suite.head_for(upstreams[names.index(outcome.upstream)], "emotion").kind,
            "runs": outcome.details,
            "seconds": outcome.seconds,
        }
    return summary


def door(cfg: DictConfig) -> list[str]:
    """Every corpus folder and option the run reads, checked before any work: one line per
    problem (``run_hydra_main`` and ``run_recipe`` call it first)."""
    sources = list(cfg.pretrain.sources)
    return (
        (["pretrain.sources=[]: give at least one pre-training corpus"] if not sources else [])
        + source_folder_problems(
            {
                **{f"pretrain.sources[{i}].src": source.src for i, source in enumerate(sources)},
                "emotion.src": cfg.emotion.src,
                "keyword.src": cfg.keyword.src,
            }
        )
        + seed_problems("seeds", cfg.seeds)
        + seed_problems("pretrain_seeds", cfg.pretrain_seeds, allow_none=True)
        + mode_problems("emotion.modes", cfg.emotion.modes)
        + label_problems("emotion.labels", cfg.emotion.labels)
        + validation_problems("emotion.validation", cfg.emotion.validation)
    )


def run(cfg: DictConfig) -> None:
    # one process group for the whole recipe under torchrun (a plain run: world of size 1)
    distributed.init_from_env(cfg.trainer.device)
    if cfg.trainer.threads > 0:
        # the whole recipe, not only the Trainer's fits: evaluation passes of the tiny
        # demo model also run fastest on one thread of a shared 2-core machine
        torch.set_num_threads(cfg.trainer.threads)
    run_dir = Path(cfg.run_dir)
    if cfg.pretrain_seeds:
        # pre-training run k serves downstream seed k: the pretrained rows' CIs then hold
        # the spread over pre-training runs too
        runs = {seed: pretrain(cfg, run_dir, seed) for seed in cfg.pretrain_seeds}
        pretrain_record = {
            "runs": [
                {"seed": seed, "checkpoint": str(checkpoint), **result}
                for seed, (checkpoint, result) in runs.items()
            ]
        }
    else:
        runs = {cfg.seed: pretrain(cfg, run_dir)}
        checkpoint, result = runs[cfg.seed]
        pretrain_record = {"checkpoint": str(checkpoint), **result}
    if not distributed.continue_on_main_only():
        return  # the emotion folds and the report are rank 0's
    summary = transfer(cfg, run_dir, [checkpoint for checkpoint, _ in runs.values()])
    heads = ", ".join(f"{name}: {entry['head']}" for name, entry in summary["emotion"].items())
    table = write_summary_report(
        run_dir,
        "Transformer predictive coding -> emotion recognition (leave-one-session-out)",
        summary,
        notes=[
            (
                "Each cell: mean over seeds with a 95 % bootstrap CI over seeds and utterances "
                "(each predicted by the fold that held its session out). Deltas: paired "
                "bootstrap over the same utterances; a gain is claimed only where the CI "
                "excludes 0."
            ),
            f"Heads: {heads}.",
        ],
        extra={"pretrain": pretrain_record},
    )
    print("\n" + table)
    print(f"results: {run_dir / 'results.md'}")


@hydra.main(config_path=str(CONF_DIR), config_name="tpc", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # bad option values, corpus paths, layouts, audio or checkpoints: one line and exit
    # code 1; a second run on the same run_dir stops at its lock
    run_recipe("tpc", run, cfg, door)


if __name__ == "__main__":
    run_hydra_main("tpc", main, door)
