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
import json
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from speechssl.config import CONF_DIR, register_configs
from speechssl.data.loaders import load_manifests, prepare_once
from speechssl.data.manifest import read_jsonl, write_jsonl
from speechssl.encoders import build_encoder
from speechssl.errors import check_source_folders, run_hydra_main, run_recipe
from speechssl.heads import head_config
from speechssl.heads.linear_probe import LinearProbeConfig
from speechssl.loading import load_encoder
from speechssl.objectives import MaskedPredictionConfig, build_objective, objective_config
from speechssl.targets import TargetConfig, Targets, hidden_targets, mfcc_targets
from speechssl.tasks.classification import TransferConfig
from speechssl.tasks.plots import plot_tsne
from speechssl.tasks.report import plot_layer_usage, write_summary_report
from speechssl.tasks.speaker import read_trials
from speechssl.tasks.suite import Suite, summarize, transfer_upstreams
from speechssl.train import distributed
from speechssl.train.config import TrainerConfig
from speechssl.train.pretrain import pretrain_on_manifests
from speechssl.typed import to_dataclass, to_plain

register_configs()

FRAME_RATE_ENCODER = 50.0  # conv front end: 320-sample stride at 16 kHz


# ---------------------------------------------------------------------------------------
# data and targets


def pretraining_manifests(cfg: DictConfig, run_dir: Path) -> tuple[Path, Path]:
    """``run_dir/data/pretrain/{train,valid}.jsonl``: LibriSpeech splits (+ VoxCeleb1 audio
    of non-verification speakers), rewritten only when their content changes."""
    source = cfg.pretrain
    libri_dir = run_dir / "data" / source.corpus
    prepare_once(source.corpus, source.src, libri_dir, verify=source.verify_audio)
    train_rows = [
        row for split in source.train_splits for row in read_jsonl(libri_dir / f"{split}.jsonl")
    ]
    valid_rows = [
        row for split in source.valid_splits for row in read_jsonl(libri_dir / f"{split}.jsonl")
    ]
    if source.voxceleb_splits:
        vox_dir = speaker_data(cfg, run_dir)
        held_out = {row["speaker"] for row in read_jsonl(vox_dir / "verification.jsonl")}
        train_rows += [
            row
            for split in source.voxceleb_splits
            for row in read_jsonl(vox_dir / f"{split}.jsonl")
            if row["speaker"] not in held_out
        ]
    if source.max_utterances and len(train_rows) > source.max_utterances:
        # evenly spaced rows keep every speaker and corpus in a quick run's subset
        step = len(train_rows) / source.max_utterances
        train_rows = [train_rows[int(i * step)] for i in range(source.max_utterances)]
    out = run_dir / "data" / "pretrain"
    paths = []
    for name, rows in (("train", train_rows), ("valid", valid_rows)):
        path = out / f"{name}.jsonl"
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if not path.is_file() or path.read_text() != text:
            write_jsonl(path, rows)  # a changed manifest invalidates its labels (digest)
        paths.append(path)
    return paths[0], paths[1]


def speaker_data(cfg: DictConfig, run_dir: Path) -> Path:
    data_dir = run_dir / "data" / cfg.speaker.corpus
    prepare_once(cfg.speaker.corpus, cfg.speaker.src, data_dir)
    return data_dir


# ---------------------------------------------------------------------------------------
# pre-training


def pretrain(
    cfg: DictConfig, objective: MaskedPredictionConfig, targets: Targets, run_dir: Path
) -> tuple[Path, dict]:
    """Masked prediction on the frame-labelled splits; returns the final checkpoint."""
    torch.manual_seed(cfg.seed)
    model = build_objective(objective, build_encoder(cfg.encoder))
    train = targets.train
    print(
        f"pre-training {run_dir.name}: mixing={objective.mixing.enabled} "
        f"contrastive={objective.contrastive.enabled}, {objective.num_classes[0]} classes at "
        f"{targets.label_rate:g} Hz, {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, {len(train.labels)} utterances "
        f"({train.manifest.total_duration / 60:.1f} min)"
    )
    return pretrain_on_manifests(
        model,
        train.manifest,
        targets.valid.manifest,
        cfg.data,
        cfg.trainer,
        cfg.optim,
        run_dir,
        full_config=cfg,
        seed=cfg.seed,
        train_labels=train.labels,
        valid_labels=targets.valid.labels,
        label_rate=targets.label_rate,
    )


def objective_for(cfg: DictConfig, switches, num_classes: int, label_rate: float):
    """The configured objective with the arm's mixing/contrastive switches and the targets."""
    objective = objective_config(cfg.objective)
    if not isinstance(objective, MaskedPredictionConfig):
        # a config option, not a programming error: one line through exit_on_bad_input
        raise ValueError(  # noqa: TRY004
            f"hubert_sat pre-trains by masked prediction, not {objective.name}"
        )
    mixing, contrastive = objective.mixing, objective.contrastive
    if switches is not None:
        mixing = dataclasses.replace(mixing, enabled=bool(switches["mixing"]))
        contrastive = dataclasses.replace(contrastive, enabled=bool(switches["contrastive"]))
    return dataclasses.replace(
        objective,
        num_classes=[num_classes],
        label_rate=label_rate,
        mixing=mixing,
        contrastive=contrastive,
    )


def iteration1_targets(cfg: DictConfig, run_dir: Path) -> tuple[tuple[Path, Path], Targets]:
    """Pre-training manifests, MFCC k-means fitted on train, labels of train and valid.

    Under torchrun rank 0 writes the manifests, the k-means model and the labels; the
    other ranks wait, then find and load them, so no file is written twice.
    """
    with distributed.main_process_first("iteration-1 targets"):
        manifests = pretraining_manifests(cfg, run_dir)
        targets = mfcc_targets(
            manifests, run_dir / "labels", to_dataclass(cfg.labels, TargetConfig), seed=cfg.seed
        )
    return manifests, targets


def pretrain_all(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Path], dict]:
    """Targets (one or two iterations), then every arm; returns ``{arm: checkpoint}``."""
    label_config = to_dataclass(cfg.labels, TargetConfig)
    timings, summary = {}, {}
    start = time.perf_counter()
    manifests, targets = iteration1_targets(cfg, run_dir)
    summary["iteration1"] = targets.summary()
    timings["labels_iteration1_s"] = time.perf_counter() - start
    if label_config.iterations >= 2:
        # iteration 1 model: plain HuBERT on the MFCC targets (Hsu et al., 2021)
        start = time.perf_counter()
        teacher_objective = objective_for(
            cfg,
            {"mixing": False, "contrastive": False},
            targets.kmeans.n_clusters,
            targets.label_rate,
        )
        teacher, teacher_result = pretrain(
            cfg, teacher_objective, targets, run_dir / "pretrain" / "iteration1"
        )
        teacher_encoder = load_encoder(teacher)
        with distributed.main_process_first("iteration-2 targets"):
            targets = hidden_targets(
                manifests,
                run_dir / "labels",
                teacher_encoder,
                label_config,
                label_rate=FRAME_RATE_ENCODER,
                teacher_name=teacher.stem,
                seed=cfg.seed,
            )
        summary["iteration2"] = {
            **targets.summary(),
            "teacher": str(teacher),
            "teacher_valid_loss": teacher_result.get("valid/loss"),
        }
        timings["iteration1_model_and_labels_iteration2_s"] = time.perf_counter() - start
    arms = dict(cfg.arms) if cfg.arms else {"pretrained": None}
    checkpoints = {}
    for arm, switches in arms.items():
        start = time.perf_counter()
        objective = objective_for(cfg, switches, targets.kmeans.n_clusters, targets.label_rate)
        checkpoint, result = pretrain(cfg, objective, targets, run_dir / "pretrain" / arm)
        checkpoints[arm] = checkpoint
        summary[arm] = {
            "checkpoint": str(checkpoint),
            "mixing": objective.mixing.enabled,
            "contrastive": objective.contrastive.enabled,
            **{key: value for key, value in result.items() if key.startswith("valid/")},
        }
        timings[f"pretrain_{arm}_s"] = time.perf_counter() - start
    summary["timings"] = timings
    return checkpoints, summary


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
    """Speaker ID, verification and emotion LOSO for every upstream and seed, one suite."""
    vox_dir = speaker_data(cfg, run_dir)
    identification = [
        load_manifests([vox_dir / f"{split}.jsonl"]) for split in ("train", "dev", "test")
    ]
    verification = load_manifests([vox_dir / "verification.jsonl"])
    trials = read_trials(vox_dir / "trials.txt")
    emotion_dir = run_dir / "data" / cfg.emotion.corpus
    prepare_once(cfg.emotion.corpus, cfg.emotion.src, emotion_dir)
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


def run(cfg: DictConfig) -> None:
    # every corpus folder the run will read, checked before any work
    check_source_folders(
        {
            "pretrain.src": cfg.pretrain.src,
            "speaker.src": cfg.speaker.src,
            "emotion.src": cfg.emotion.src,
        }
    )
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
    run_recipe("hubert_sat", run, cfg)


if __name__ == "__main__":
    run_hydra_main("hubert_sat", main)
