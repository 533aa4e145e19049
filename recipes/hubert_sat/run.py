"""Speaker-aware HuBERT (UniSpeech-SAT, Chen et al., 2021) -> speaker and emotion tasks.

    python recipes/hubert_sat/run.py                 # whole recipe on the embedded demo corpus
    python recipes/hubert_sat/run.py ablation=sat    # the four-arm ablation, one table
    python recipes/hubert_sat/run.py debug=tiny      # a few steps of every stage

Stages: prepare (LibriSpeech-style pre-training audio + VoxCeleb1 train audio, VoxCeleb1
identification/verification, IEMOCAP emotion) -> iteration-1 targets: 39-dim MFCC ->
k-means fitted on the train split -> frame labels (100 Hz) beside the manifests
[-> iteration 2: a HuBERT model on those targets, k-means of one of its layers -> 50 Hz
labels] -> pre-train each arm (HuBERT / UniSpeech-SAT switches) on the same targets and
budget -> speaker identification (accuracy), verification (EER, minDCF) and
leave-one-session-out emotion recognition (WA/UA) on FBANK, the random-weight encoder and
each pre-trained encoder -> results.md, results.json and plots in ``run_dir``.
See recipes/hubert_sat/README.md.

Under ``torchrun --nproc_per_node=N`` rank 0 prepares the data, fits the k-means models
and writes the labels while the other ranks wait and then load them; every rank
pre-trains (DDP); rank 0 alone runs the downstream tasks and writes the report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from speechssl.config import CONF_DIR, register_configs
from speechssl.data.loaders import load_manifests, prepared_folder
from speechssl.errors import run_hydra_main, run_recipe, source_folder_problems
from speechssl.heads import head_config
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.targets import TargetConfig
from speechssl.tasks.classification import TransferConfig
from speechssl.tasks.door import label_problems, mode_problems, seed_problems, validation_problems
from speechssl.tasks.evaluate import score_task
from speechssl.tasks.plots import plot_tsne
from speechssl.tasks.report import plot_layer_usage, write_summary_report
from speechssl.tasks.speaker import read_trials
from speechssl.tasks.suite import Suite, summarize, transfer_upstreams
from speechssl.train import distributed
from speechssl.train.config import TrainerConfig
from speechssl.train.hubert import PretrainingData, TrainingSetup, pretrain_iterations
from speechssl.typed import to_dataclass, to_plain

register_configs()


def pretraining_data(cfg: DictConfig) -> PretrainingData:
    """LibriSpeech splits (+ VoxCeleb1 audio of non-verification speakers)."""
    source = cfg.pretrain
    return PretrainingData(
        corpus=source.corpus,
        src=source.src,
        train_splits=list(source.train_splits),
        valid_splits=list(source.valid_splits),
        verify_audio=source.verify_audio,
        speaker_corpus=cfg.speaker.corpus,
        speaker_src=cfg.speaker.src,
        speaker_splits=list(source.voxceleb_splits or []),
        max_utterances=source.max_utterances,
    )


def pretrain_all(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Path], dict]:
    """Targets (one or two iterations), then every arm; returns ``{arm: checkpoint}``."""
    setup = TrainingSetup(cfg.encoder, cfg.data, cfg.trainer, cfg.optim, cfg, cfg.seed)
    return pretrain_iterations(
        pretraining_data(cfg),
        to_dataclass(cfg.labels, TargetConfig),
        cfg.objective,
        setup,
        run_dir,
        arms=cfg.arms,
    )


# ---------------------------------------------------------------------------------------
# downstream


def transfer_config(cfg: DictConfig) -> TransferConfig:
    """The downstream budget: ``transfer`` alone (``trainer`` lends its engine settings)."""
    config = to_dataclass(cfg.transfer, TransferConfig)
    trainer = to_dataclass(cfg.trainer, TrainerConfig)
    return dataclasses.replace(
        config, trainer=dataclasses.replace(trainer, log_every=min(trainer.log_every, 10))
    )


def evaluate(cfg: DictConfig, run_dir: Path, checkpoints: dict[str, Path]) -> dict:
    """Speaker ID, verification, emotion LOSO, keyword spotting (frozen), one suite."""
    vox_dir = prepared_folder(cfg.speaker.corpus, cfg.speaker.src, run_dir / "data")
    identification = [
        load_manifests([vox_dir / f"{split}.jsonl"]) for split in ("train", "dev", "test")
    ]
    verification = load_manifests([vox_dir / "verification.jsonl"])
    trials = read_trials(vox_dir / "trials.txt")
    emotion_dir = prepared_folder(cfg.emotion.corpus, cfg.emotion.src, run_dir / "data")
    emotion = load_manifests([emotion_dir / "all.jsonl"])
    head = head_config(cfg.head)
    layers = cfg.speaker.verification_layers
    suite = Suite(
        head,
        transfer_config(cfg),
        run_dir / "transfer",
        verification_layers=None if layers is None else list(layers),
        progress=print,
    )
    upstreams = transfer_upstreams(
        list(cfg.modes),
        to_plain(cfg.encoder),
        {arm: [path] for arm, path in checkpoints.items()},
        list(cfg.seeds),
        deterministic_head=isinstance(head, LinearProbeConfig),
        n_mels=cfg.fbank_n_mels,
    )
    outcomes = []
    speakers = [str(value) for value in verification.column("speaker").values()]
    for upstream in upstreams:
        print(f"\n== {upstream.name} (seeds {list(upstream.seeds)})")
        outcomes.append(suite.speaker_identification(upstream, *identification))
        outcomes.append(suite.speaker_verification(upstream, verification, trials))
        # one OpenMP thread: beside torch's pool, sklearn's t-SNE threads spin for seconds
        with threadpool_limits(1):
            plot_tsne(
                outcomes[-1].embeddings,
                speakers,
                run_dir / f"tsne_{upstream.name}.png",
                title=f"{upstream.name}: verification embeddings",
                seed=cfg.seed,
            )
        outcomes.append(
            suite.emotion(
                upstream,
                emotion,
                list(cfg.emotion.labels),
                validation=cfg.emotion.validation,
                max_folds=cfg.emotion.max_folds,
            )
        )
        if cfg.keyword.src is not None and upstream.mode == "frozen":  # spoken words
            outcomes.append(score_task(suite, upstream, "keyword", cfg.keyword.src, run_dir))
    names = [upstream.name for upstream in upstreams]
    comparisons = [
        (name, baseline)
        for name in names
        if name not in ("fbank", "random_frozen", "random_finetune")
        for baseline in ("random_frozen", "fbank")
    ]
    # each ablation arm against the full model (UniSpeech-SAT in ablation=sat)
    full = next((n for n in ("unispeech_sat_frozen", "pretrained_frozen") if n in names), None)
    if full is not None:
        comparisons += [
            (name, full)
            for name in names
            if name.endswith("_frozen") and name not in (full, "random_frozen")
        ]
    plot_layer_usage(run_dir, outcomes)
    summary = summarize(outcomes, comparisons)
    summary["details"] = {
        outcome.upstream + "/" + outcome.task: {
            "seeds": outcome.seeds,
            "seconds": outcome.seconds,
            "runs": outcome.details,
        }
        for outcome in outcomes
    }
    summary["heads"] = {
        upstream.name: {
            task: suite.head_for(upstream, task).kind for task in ("speaker_id", "emotion")
        }
        for upstream in upstreams
    }
    return summary


def report(run_dir: Path, summary: dict, pretraining: dict, title: str) -> str:
    notes = [
        (
            "Each cell: mean over seeds with a 95 % bootstrap CI over seeds and test items "
            "(speaker ID: test utterances; verification: trials; emotion: every utterance, "
            "predicted by the leave-one-session-out fold that held its session out). Deltas: "
            "paired bootstrap over the same items; a gain is claimed only where the CI "
            "excludes 0."
        ),
        "Heads (speaker ID / emotion): "
        + ", ".join(
            f"{name}: {'/'.join(heads.values())}" for name, heads in summary["heads"].items()
        )
        + ".",
        (
            "Verification: cosine of per-layer mean-pooled hidden states averaged over layers "
            "(nothing trained on the trial speakers)."
        ),
    ]
    return write_summary_report(
        run_dir,
        title,
        summary,
        notes=notes,
        extra={"pretrain": pretraining, "details": summary["details"], "heads": summary["heads"]},
    )


def door(cfg: DictConfig) -> list[str]:
    """Every corpus folder and option the run reads, checked before any work: one line per
    problem (``run_hydra_main`` and ``run_recipe`` call it first)."""
    names = ("pretrain", "speaker", "emotion", "keyword")
    folders = {f"{name}.src": cfg[name].src for name in names}
    return (
        source_folder_problems(folders)
        + seed_problems("seeds", cfg.seeds)
        + mode_problems("modes", cfg.modes)
        + label_problems("emotion.labels", cfg.emotion.labels)
        + validation_problems("emotion.validation", cfg.emotion.validation)
    )


def run(cfg: DictConfig) -> None:
    # one process group for the whole recipe under torchrun (a plain run: world of size 1)
    distributed.init_from_env(cfg.trainer.device)
    run_dir = Path(cfg.run_dir)
    start = time.perf_counter()
    checkpoints, pretraining = pretrain_all(cfg, run_dir)
    if not distributed.continue_on_main_only():
        return  # the downstream tasks and the report are rank 0's
    summary = evaluate(cfg, run_dir, checkpoints)
    pretraining["timings"]["total_s"] = time.perf_counter() - start
    title = (
        "UniSpeech-SAT ablation" if cfg.arms else "Speaker-aware HuBERT"
    ) + " -> speaker identification, verification, emotion"
    table = report(run_dir, summary, pretraining, title)
    print("\n" + table)
    print(f"results: {run_dir / 'results.md'} ({pretraining['timings']['total_s']:.0f} s)")


@hydra.main(config_path=str(CONF_DIR), config_name="hubert_sat", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # bad option values, corpus paths, layouts, audio or checkpoints: one line and exit
    # code 1; a second run on the same run_dir stops at its lock
    run_recipe("hubert_sat", run, cfg, door)


if __name__ == "__main__":
    run_hydra_main("hubert_sat", main, door)
