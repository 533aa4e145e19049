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
import numpy as np
import torch
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from speechssl.cluster import KMeans
from speechssl.config import CONF_DIR, register_configs, to_container
from speechssl.data.frame_labels import (
    FrameLabels,
    encoder_layer_features,
    ensure_frame_labels,
    fit_kmeans,
    load_frame_labels,
    make_frame_label_loader,
    mfcc_features,
)
from speechssl.data.loaders import DataConfig, load_manifests, prepare_once
from speechssl.data.manifest import read_jsonl, write_jsonl
from speechssl.encoders import build_encoder
from speechssl.errors import check_source_folders, run_hydra_main, run_recipe
from speechssl.heads.config import ClassifierHeadConfig, EcapaHeadConfig
from speechssl.loading import load_encoder
from speechssl.objectives import HubertPretrainModel, MaskedPredictionConfig
from speechssl.tasks.classification import TRANSFER_MODES, TransferConfig, upstream_factory
from speechssl.tasks.emotion import run_emotion_loso
from speechssl.tasks.plots import plot_layer_weights, plot_metric_bars, plot_tsne
from speechssl.tasks.report import write_results
from speechssl.tasks.speaker import read_trials
from speechssl.tasks.speaker_protocol import run_speaker_identification, run_speaker_verification
from speechssl.train import Trainer, distributed
from speechssl.train.checkpoint import latest_checkpoint
from speechssl.train.config import TrainerConfig, to_dataclass

register_configs()

FRAME_RATE_MFCC = 100.0  # 10 ms hop
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


def kmeans_once(path: Path, num_clusters: int, fit) -> KMeans:
    """Load the k-means model at ``path`` (same cluster count) or fit and save it."""
    if path.is_file():
        kmeans = KMeans.load(path, device="cpu")
        if kmeans.n_clusters == num_clusters:
            return kmeans
    kmeans = fit()
    kmeans.save(path)
    return kmeans


def label_splits(
    cfg: DictConfig,
    manifests: tuple[Path, Path],
    kmeans: KMeans,
    feature_fn,
    tag: str,
    label_rate: float,
) -> tuple[FrameLabels, FrameLabels]:
    """Label train *and* valid with the train k-means; load them, dropping misfits."""
    loaded = []
    for manifest in manifests:
        label_path = ensure_frame_labels(
            manifest, kmeans, feature_fn, tag=tag, label_rate=label_rate
        )
        loaded.append(
            load_frame_labels(
                manifest,
                label_path,
                label_rate,
                max_drift_per_second=cfg.labels.max_drift_per_second,
            )
        )
        frames = sum(labels.size for labels in loaded[-1].labels)
        print(
            f"labels {label_path.name}: {len(loaded[-1].labels)} utterances, {frames} frames "
            f"(k-means {kmeans.fingerprint}, {kmeans.n_clusters} clusters, {label_rate:g} Hz)"
        )
    return loaded[0], loaded[1]


# ---------------------------------------------------------------------------------------
# pre-training


def pretrain(
    cfg: DictConfig,
    objective: MaskedPredictionConfig,
    train: FrameLabels,
    valid: FrameLabels,
    run_dir: Path,
) -> tuple[Path, dict]:
    """Masked prediction on frame-labelled manifests; returns the final checkpoint."""
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(to_container(cfg.encoder))
    model = HubertPretrainModel(encoder, objective)
    data = to_dataclass(cfg.data, DataConfig)
    label_rate = objective.label_rate
    print(
        f"pre-training {run_dir.name}: mixing={objective.mixing.enabled} "
        f"contrastive={objective.contrastive.enabled}, {objective.num_classes[0]} classes at "
        f"{label_rate:g} Hz, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(train.labels)} utterances ({train.manifest.total_duration / 60:.1f} min)"
    )
    trainer = Trainer(
        model,
        make_frame_label_loader(train, data, label_rate, train=True, seed=cfg.seed),
        make_frame_label_loader(valid, data, label_rate, train=False) if valid.labels else None,
        trainer_cfg=cfg.trainer,
        optim_cfg=cfg.optim,
        full_config=cfg,
        run_dir=run_dir,
        sample_rate=data.sample_rate,
    )
    result = trainer.fit()
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise RuntimeError(f"no checkpoint was written under {run_dir}")
    return checkpoint, result


def objective_for(cfg: DictConfig, switches, num_classes: int, label_rate: float):
    """The configured objective with the arm's mixing/contrastive switches and the targets."""
    objective = to_dataclass(cfg.objective, MaskedPredictionConfig)
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


def iteration1_targets(
    cfg: DictConfig, run_dir: Path
) -> tuple[tuple[Path, Path], KMeans, FrameLabels, FrameLabels]:
    """Pre-training manifests, MFCC k-means fitted on train, labels of train and valid.

    Under torchrun rank 0 writes the manifests, the k-means model and the labels; the
    other ranks wait, then find and load them, so no file is written twice.
    """
    mfcc = mfcc_features()
    with distributed.main_process_first("iteration-1 targets"):
        manifests = pretraining_manifests(cfg, run_dir)
        kmeans, train, valid = fit_and_label(
            cfg,
            manifests,
            run_dir / "labels" / f"iter1_mfcc_k{cfg.labels.mfcc_clusters}.pt",
            mfcc,
            cfg.labels.mfcc_clusters,
            "iter1_mfcc",
            FRAME_RATE_MFCC,
        )
    return manifests, kmeans, train, valid


def fit_and_label(
    cfg: DictConfig,
    manifests: tuple[Path, Path],
    kmeans_path: Path,
    feature_fn,
    num_clusters: int,
    tag: str,
    label_rate: float,
) -> tuple[KMeans, FrameLabels, FrameLabels]:
    """K-means on the train split's features (fitted once, kept at ``kmeans_path``), then
    frame labels for train and valid with it."""
    kmeans = kmeans_once(
        kmeans_path,
        num_clusters,
        lambda: fit_kmeans(
            manifests[0],
            feature_fn,
            num_clusters,
            max_fit_frames=cfg.labels.max_fit_frames,
            seed=cfg.seed,
            device="cpu",
        ),
    )
    train, valid = label_splits(cfg, manifests, kmeans, feature_fn, tag, label_rate)
    return kmeans, train, valid


def pretrain_all(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Path], dict]:
    """Targets (one or two iterations), then every arm; returns ``{arm: checkpoint}``."""
    labels_dir = run_dir / "labels"
    timings, summary = {}, {}
    start = time.perf_counter()
    manifests, kmeans, train, valid = iteration1_targets(cfg, run_dir)
    num_classes, label_rate = kmeans.n_clusters, FRAME_RATE_MFCC
    summary["iteration1"] = _label_summary(kmeans, train, valid, label_rate)
    timings["labels_iteration1_s"] = time.perf_counter() - start
    if cfg.labels.iterations >= 2:
        # iteration 1 model: plain HuBERT on the MFCC targets (Hsu et al., 2021)
        start = time.perf_counter()
        teacher_objective = objective_for(
            cfg, {"mixing": False, "contrastive": False}, num_classes, label_rate
        )
        teacher, teacher_result = pretrain(
            cfg, teacher_objective, train, valid, run_dir / "pretrain" / "iteration1"
        )
        layer = cfg.labels.hidden_layer
        features = encoder_layer_features(load_encoder(teacher), layer)
        with distributed.main_process_first("iteration-2 targets"):
            kmeans, train, valid = fit_and_label(
                cfg,
                manifests,
                labels_dir / f"iter2_layer{layer}_k{cfg.labels.hidden_clusters}_{teacher.stem}.pt",
                features,
                cfg.labels.hidden_clusters,
                f"iter2_layer{layer}",
                FRAME_RATE_ENCODER,
            )
        num_classes, label_rate = kmeans.n_clusters, FRAME_RATE_ENCODER
        summary["iteration2"] = {
            **_label_summary(kmeans, train, valid, label_rate),
            "teacher": str(teacher),
            "teacher_valid_loss": teacher_result.get("valid/loss"),
        }
        timings["iteration1_model_and_labels_iteration2_s"] = time.perf_counter() - start
    arms = dict(cfg.arms) if cfg.arms else {"pretrained": None}
    checkpoints = {}
    for arm, switches in arms.items():
        start = time.perf_counter()
        objective = objective_for(cfg, switches, num_classes, label_rate)
        checkpoint, result = pretrain(cfg, objective, train, valid, run_dir / "pretrain" / arm)
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


def _label_summary(kmeans: KMeans, train: FrameLabels, valid: FrameLabels, rate: float) -> dict:
    return {
        "kmeans_fingerprint": kmeans.fingerprint,
        "num_clusters": kmeans.n_clusters,
        "label_rate": rate,
        "train_utterances": len(train.labels),
        "valid_utterances": len(valid.labels),
        "dropped_mismatched": len(train.mismatched) + len(valid.mismatched),
        "dropped_unlabelled": len(train.unlabelled) + len(valid.unlabelled),
    }


# ---------------------------------------------------------------------------------------
# downstream


def upstream_rows(
    cfg: DictConfig, checkpoints: dict[str, Path]
) -> list[tuple[str, str, Path | None]]:
    """``(row name, transfer mode, checkpoint)``: baselines once, pretrained modes per arm."""
    rows = []
    for mode in cfg.modes:
        if mode not in TRANSFER_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {sorted(TRANSFER_MODES)}")
        if not mode.startswith("pretrained"):
            rows.append((mode, mode, None))
            continue
        for arm, checkpoint in checkpoints.items():
            name = mode if arm == "pretrained" else mode.replace("pretrained", arm)
            rows.append((name, mode, checkpoint))
    return rows


def transfer_config(cfg: DictConfig) -> TransferConfig:
    config = to_dataclass(cfg.transfer, TransferConfig)
    trainer = to_dataclass(cfg.trainer, TrainerConfig)
    # trainer.max_steps also caps each downstream run (debug=tiny shrinks everything)
    return dataclasses.replace(
        config,
        max_steps=min(config.max_steps, trainer.max_steps or config.max_steps),
        trainer=dataclasses.replace(trainer, log_every=min(trainer.log_every, 10)),
    )


def evaluate(cfg: DictConfig, run_dir: Path, checkpoints: dict[str, Path]) -> dict:
    vox_dir = speaker_data(cfg, run_dir)
    identification = {
        split: load_manifests([vox_dir / f"{split}.jsonl"]) for split in ("train", "dev", "test")
    }
    verification = load_manifests([vox_dir / "verification.jsonl"])
    trials = read_trials(vox_dir / "trials.txt")
    emotion_dir = run_dir / "data" / cfg.emotion.corpus
    prepare_once(cfg.emotion.corpus, cfg.emotion.src, emotion_dir)
    emotion = load_manifests([emotion_dir / "all.jsonl"])
    config = transfer_config(cfg)
    head_schema = EcapaHeadConfig if cfg.head.kind == "ecapa" else ClassifierHeadConfig
    head = to_dataclass(cfg.head, head_schema)
    emotion_head = head
    if head.kind == "ecapa":
        # ECAPA + AAM softmax is the speaker head (UniSpeech-SAT, SUPERB SID/ASV); emotion
        # keeps SUPERB's utterance classifier (weighted layer sum, mean pooling, linear)
        emotion_head = ClassifierHeadConfig(
            freeze_feature_extractor=head.freeze_feature_extractor,
            use_layer_sum=head.use_layer_sum,
            layer_norm=head.layer_norm,
        )
    layers = cfg.speaker.verification_layers
    outcomes = {}
    for name, mode, checkpoint in upstream_rows(cfg, checkpoints):
        start = time.perf_counter()
        make_encoder, head_mode = upstream_factory(
            mode, to_container(cfg.encoder), checkpoint, n_mels=cfg.fbank_n_mels, seed=cfg.seed
        )
        row_head = dataclasses.replace(head, mode=head_mode)
        row_dir = run_dir / "transfer" / name
        print(f"\n== {name}: {TRANSFER_MODES[mode]}")
        # train_classifier seeds each head itself; seeding the global RNG here too keeps
        # anything else a row draws from it independent of what ran before (pre-training,
        # resumed or not, the rows above)
        torch.manual_seed(cfg.seed)
        sid = run_speaker_identification(
            make_encoder,
            identification["train"],
            identification["dev"],
            identification["test"],
            row_head,
            config,
            row_dir / "speaker_id",
            seed=cfg.seed,
        )
        print(f"speaker identification top-1 {100 * sid['top1']:.2f}%")
        # the encoder as pre-trained (fine-tuning is for the classification tasks only)
        sv, embeddings = run_speaker_verification(
            make_encoder,
            verification,
            trials,
            data_config=config.data,
            layers=None if layers is None else list(layers),
        )
        print(f"speaker verification EER {100 * sv['eer']:.2f}%, minDCF {sv['min_dcf']:.3f}")
        speakers = [verification.row(index)["speaker"] for index in range(len(verification))]
        if head_mode == "frozen":
            # one OpenMP thread: beside torch's pool, sklearn's t-SNE threads spin for seconds
            with threadpool_limits(1):
                plot_tsne(
                    embeddings,
                    speakers,
                    run_dir / f"tsne_{name}.png",
                    title=f"{name}: verification embeddings",
                    seed=cfg.seed,
                )
        torch.manual_seed(cfg.seed)  # as for speaker identification
        emotion_results, emotion_weights = run_emotion_loso(
            make_encoder,
            emotion,
            list(cfg.emotion.labels),
            dataclasses.replace(emotion_head, mode=head_mode),
            config,
            row_dir / "emotion",
            validation=cfg.emotion.validation,
            max_folds=cfg.emotion.max_folds,
            seed=cfg.seed,
            progress=print,
        )
        emotion_summary = emotion_results.summary()
        weights = [w for w in emotion_weights if np.size(w) > 1]
        if weights:
            emotion_summary["layer_weights_mean"] = np.mean(np.stack(weights), axis=0).tolist()
        print(
            f"emotion WA {100 * emotion_summary['wa_mean']:.2f}%, "
            f"UA {100 * emotion_summary['ua_mean']:.2f}%"
        )
        outcomes[name] = {
            "mode": mode,
            "description": TRANSFER_MODES[mode],
            "checkpoint": None if checkpoint is None else str(checkpoint),
            "heads": {"speaker_identification": head.kind, "emotion": emotion_head.kind},
            "speaker_identification": sid,
            "speaker_verification": sv,
            "emotion": emotion_summary,
            "seconds": time.perf_counter() - start,
        }
        plot_layer_usage(
            run_dir, name, sid["layer_weights"], emotion_summary.get("layer_weights_mean")
        )
    return outcomes


def plot_layer_usage(run_dir: Path, name: str, speaker_weights, emotion_weights) -> None:
    """Learned layer weights of the speaker and emotion heads (which layers they read)."""
    for task, weights in (("speaker", speaker_weights), ("emotion", emotion_weights)):
        if weights is not None and len(weights) > 1:
            plot_layer_weights(
                weights,
                run_dir / f"layer_weights_{task}_{name}.png",
                title=f"{name}: {task} head's layer weights",
            )


# ---------------------------------------------------------------------------------------
# report


def report(run_dir: Path, outcomes: dict, pretraining: dict, title: str) -> str:
    rows = [
        (
            "| upstream | speaker ID top-1 (%) | verification EER (%) | minDCF | emotion WA (%) "
            "| emotion UA (%) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    bars = {}
    for name, outcome in outcomes.items():
        sid, sv, emotion = (
            outcome["speaker_identification"],
            outcome["speaker_verification"],
            outcome["emotion"],
        )
        frozen_encoder_note = "" if outcome["mode"] != "pretrained_finetune" else " ¹"
        rows.append(
            f"| {name} | {100 * sid['top1']:.2f} | {100 * sv['eer']:.2f}{frozen_encoder_note} | "
            f"{sv['min_dcf']:.3f} | {100 * emotion['wa_mean']:.2f} ± {100 * emotion['wa_std']:.2f} "
            f"| {100 * emotion['ua_mean']:.2f} ± {100 * emotion['ua_std']:.2f} |"
        )
        bars[f"{name}: speaker ID"] = (100 * sid["top1"], 0.0)
        bars[f"{name}: EER"] = (100 * sv["eer"], 0.0)
        bars[f"{name}: WA"] = (100 * emotion["wa_mean"], 100 * emotion["wa_std"])
        bars[f"{name}: UA"] = (100 * emotion["ua_mean"], 100 * emotion["ua_std"])
    table = "\n".join(rows) + "\n"
    notes = [
        (
            "Speaker ID: utterance classifier on the VoxCeleb1-style train split, model selected "
            "on dev, top-1 on test. Verification: cosine scoring of mean-pooled hidden states of "
            "the frozen encoder, averaged over layers (nothing trained on the trial speakers). "
            "Emotion: leave-one-session-out, mean ± std over folds."
        ),
    ]
    if any(outcome["mode"] == "pretrained_finetune" for outcome in outcomes.values()):
        notes.append("¹ verification uses the pre-trained encoder before fine-tuning.")
    plot_metric_bars(bars, run_dir / "results.png", ylabel="%", title=title)
    markdown = "\n".join(
        [
            f"# {title}",
            "",
            table,
            *notes,
            "",
            "Pre-training:",
            "",
            "```",
            json.dumps(pretraining, indent=2, default=str),
            "```",
            "",
        ]
    )
    write_results(run_dir, {"title": title, "results": outcomes, "pretrain": pretraining}, markdown)
    return table


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
    outcomes = evaluate(cfg, run_dir, checkpoints)
    pretraining["timings"]["total_s"] = time.perf_counter() - start
    title = (
        "UniSpeech-SAT ablation" if cfg.arms else "Speaker-aware HuBERT"
    ) + " -> speaker identification, verification, emotion"
    table = report(run_dir, outcomes, pretraining, title)
    print("\n" + table)
    print(f"results: {run_dir / 'results.md'} ({pretraining['timings']['total_s']:.0f} s)")


@hydra.main(config_path=str(CONF_DIR), config_name="hubert_sat", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # bad option values, corpus paths, layouts, audio or checkpoints: one line and exit
    # code 1; a second run on the same run_dir stops at its lock
    run_recipe("hubert_sat", run, cfg)


if __name__ == "__main__":
    run_hydra_main("hubert_sat", main)
