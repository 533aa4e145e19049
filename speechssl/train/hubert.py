"""HuBERT-style pre-training in iterations: the audio, the targets, then one model per arm.

HuBERT (Hsu et al., 2021) and UniSpeech-SAT (Chen et al., 2021) pre-train by masked
prediction of k-means targets. This module wires the library's parts into that pipeline,
so that a recipe only reads its config:

1. :meth:`PretrainingData.manifests`: the pre-training splits of a prepared corpus (plus,
   optionally, audio of a speaker corpus's non-verification speakers) written as
   ``train.jsonl``/``valid.jsonl``, rewritten only when their content changes (a changed
   manifest invalidates its labels through their digest);
2. :func:`iteration1_targets`: MFCC k-means fitted on train, labels of every split
   (:mod:`speechssl.targets`);
3. :func:`pretrain_iterations`: with ``TargetConfig.iterations == 2``, a plain HuBERT
   teacher on the MFCC targets and k-means of one of its layers; then each arm (HuBERT /
   UniSpeech-SAT switches of utterance mixing and the utterance contrastive loss) on the
   same targets and budget.

Under ``torchrun`` rank 0 writes the manifests, k-means models and labels while the other
ranks wait, then load them; every rank pre-trains (DDP).

Example (the embedded demo corpus; ``recipes/hubert_sat/run.py`` runs the whole study)::

    data = PretrainingData("librispeech", demo_path("librispeech"), ["train-clean-100"],
                           ["dev-clean"])
    setup = TrainingSetup(cfg.encoder, cfg.data, cfg.trainer, cfg.optim, seed=0)
    checkpoints, summary = pretrain_iterations(data, TargetConfig(mfcc_clusters=50),
                                               objective_config(cfg.objective), setup,
                                               Path("runs/hubert"), arms=None)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechssl.data.loaders import prepared_folder
from speechssl.data.manifest import read_jsonl, write_jsonl
from speechssl.encoders import build_encoder
from speechssl.loading import load_encoder
from speechssl.objectives import MaskedPredictionConfig, build_objective, objective_config
from speechssl.targets import TargetConfig, Targets, hidden_targets, mfcc_targets
from speechssl.train import distributed
from speechssl.train.pretrain import pretrain_on_manifests

__all__ = [
    "PretrainingData",
    "TrainingSetup",
    "evenly_spaced",
    "iteration1_targets",
    "masked_prediction_objective",
    "pretrain_iterations",
    "pretrain_on_targets",
    "write_if_changed",
]


def evenly_spaced(rows: Sequence, count: int) -> list:
    """At most ``count`` rows, evenly spaced (``count <= 0`` keeps all).

    Evenly spaced rows keep every speaker and corpus of a concatenated list in a quick
    run's subset, where the first ``count`` would keep only the first corpus.

    Example:
        >>> evenly_spaced(list("abcdef"), 3)
        ['a', 'c', 'e']
    """
    if count <= 0 or len(rows) <= count:
        return list(rows)
    step = len(rows) / count
    return [rows[int(index * step)] for index in range(count)]


def write_if_changed(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write ``rows`` as a JSONL manifest at ``path`` unless it already holds exactly them.

    An untouched file keeps its bytes, hence its digest, hence the frame labels made from
    it (:func:`speechssl.data.frame_labels.manifest_digest`).
    """
    path = Path(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not path.is_file() or path.read_text() != text:
        write_jsonl(path, rows)  # a changed manifest invalidates its labels (digest)
    return path


def _split_rows(folder: Path, split: str) -> list[dict]:
    """Rows of a prepared split ``folder/<split>.jsonl``, or of a manifest path ``*.jsonl``."""
    if str(split).endswith(".jsonl"):
        return list(read_jsonl(Path(split).expanduser()))
    return list(read_jsonl(folder / f"{split}.jsonl"))


@dataclass
class PretrainingData:
    """The pre-training audio: splits of a prepared corpus, plus speaker-corpus audio.

    Attributes:
        corpus, src: the corpus (a ``speechssl prepare`` name) and its folder.
        train_splits, valid_splits: its prepared splits that make train and valid; an
            entry ending in ``.jsonl`` is a manifest path read as it is (a corpus prepared
            elsewhere, e.g. ``speechssl prepare folder /data/LibriLight m --unlabelled``
            then ``train_splits=[m/all.jsonl]``).
        verify_audio: decode every file while preparing (unreadable ones are skipped).
        speaker_corpus, speaker_src: a VoxCeleb1-layout corpus whose ``speaker_splits``
            audio joins the training split (more speakers; no label is used). The speakers
            of its ``verification.jsonl`` are always left out.
        max_utterances: keep at most this many (evenly spaced) training rows; 0 keeps all.
    """

    corpus: str
    src: str
    train_splits: Sequence[str]
    valid_splits: Sequence[str]
    verify_audio: bool = True
    speaker_corpus: str | None = None
    speaker_src: str | None = None
    speaker_splits: Sequence[str] = ()
    max_utterances: int = 0

    def manifests(self, data_root: str | os.PathLike) -> tuple[Path, Path]:
        """``data_root/pretrain/{train,valid}.jsonl``, each corpus prepared under
        ``data_root/<corpus>`` once; a file is rewritten only when its content changes."""
        data_root = Path(data_root)
        folder = prepared_folder(self.corpus, self.src, data_root, verify=self.verify_audio)
        train_rows = [row for split in self.train_splits for row in _split_rows(folder, split)]
        valid_rows = [row for split in self.valid_splits for row in _split_rows(folder, split)]
        if self.speaker_splits:
            if self.speaker_corpus is None or self.speaker_src is None:
                raise ValueError("speaker_splits need speaker_corpus and speaker_src")
            speakers = prepared_folder(self.speaker_corpus, self.speaker_src, data_root)
            held_out = {row["speaker"] for row in read_jsonl(speakers / "verification.jsonl")}
            train_rows += [
                row
                for split in self.speaker_splits
                for row in read_jsonl(speakers / f"{split}.jsonl")
                if row["speaker"] not in held_out
            ]
        train_rows = evenly_spaced(train_rows, self.max_utterances)
        out = data_root / "pretrain"
        return write_if_changed(out / "train.jsonl", train_rows), write_if_changed(
            out / "valid.jsonl", valid_rows
        )


@dataclass
class TrainingSetup:
    """What every model of the iterations shares.

    Attributes:
        encoder: the encoder config (node, dict or dataclass: :func:`build_encoder`).
        data, trainer, optim: ``DataConfig``, ``TrainerConfig``, ``OptimConfig`` (or nodes).
        full_config: stored in each checkpoint (the recipe's resolved config).
        seed: initial weights and data order.
    """

    encoder: Any
    data: Any
    trainer: Any
    optim: Any
    full_config: Any = None
    seed: int = 0


def masked_prediction_objective(
    objective: Any,
    num_classes: int,
    label_rate: float,
    switches: Mapping[str, bool] | None = None,
) -> MaskedPredictionConfig:
    """``objective`` (a config or node) with the targets' classes and rate, and an arm's
    ``switches`` (``{"mixing": bool, "contrastive": bool}``; ``None`` keeps the config's).

    Raises:
        ValueError: ``objective`` is not masked prediction (a config option: one line).

    Example:
        >>> arm = masked_prediction_objective({"name": "masked_prediction"}, 8, 100.0,
        ...                                   {"mixing": False, "contrastive": True})
        >>> arm.num_classes, arm.mixing.enabled, arm.contrastive.enabled
        ([8], False, True)
    """
    objective = objective_config(objective)
    if not isinstance(objective, MaskedPredictionConfig):
        # a config option, not a programming error: one line through exit_on_bad_input
        raise ValueError(  # noqa: TRY004
            f"HuBERT pre-training is masked prediction, not {objective.name}"
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


def pretrain_on_targets(
    setup: TrainingSetup,
    objective: MaskedPredictionConfig,
    targets: Targets,
    run_dir: str | os.PathLike,
    report: Callable[[str], None] = print,
) -> tuple[Path, dict]:
    """Masked prediction of ``targets`` on its frame-labelled train and valid splits.

    Returns the final checkpoint and the Trainer's result (``valid/loss`` included);
    resumes from ``run_dir`` when a checkpoint is there.
    """
    run_dir = Path(run_dir)
    torch.manual_seed(setup.seed)  # the initial weights come from the seed alone
    model = build_objective(objective, build_encoder(setup.encoder))
    train = targets.train
    report(
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
        setup.data,
        setup.trainer,
        setup.optim,
        run_dir,
        full_config=setup.full_config,
        seed=setup.seed,
        train_labels=train.labels,
        valid_labels=targets.valid.labels,
        label_rate=targets.label_rate,
    )


def iteration1_targets(
    data: PretrainingData, run_dir: str | os.PathLike, config: TargetConfig, seed: int = 0
) -> tuple[tuple[Path, Path], Targets]:
    """Pre-training manifests under ``run_dir/data``, MFCC k-means fitted on train and the
    labels of train and valid under ``run_dir/labels``.

    Under torchrun rank 0 writes the manifests, the k-means model and the labels; the
    other ranks wait, then find and load them, so no file is written twice.
    """
    run_dir = Path(run_dir)
    with distributed.main_process_first("iteration-1 targets"):
        manifests = data.manifests(run_dir / "data")
        targets = mfcc_targets(manifests, run_dir / "labels", config, seed=seed)
    return manifests, targets


def pretrain_iterations(
    data: PretrainingData,
    target_config: TargetConfig,
    objective: Any,
    setup: TrainingSetup,
    run_dir: str | os.PathLike,
    arms: Mapping[str, Mapping[str, bool] | None] | None = None,
) -> tuple[dict[str, Path], dict]:
    """Targets (one or two iterations), then one model per arm on the same targets.

    Args:
        data: the pre-training audio (manifests under ``run_dir/data``).
        target_config: the k-means targets; ``iterations == 2`` first trains a plain
            HuBERT teacher (``run_dir/pretrain/iteration1``) on the MFCC targets.
        objective: the masked-prediction objective config (or node) every arm starts from.
        setup: encoder, data, trainer and optimiser shared by every model.
        run_dir: labels under ``run_dir/labels``, models under ``run_dir/pretrain/<arm>``.
        arms: ``{arm: {"mixing": bool, "contrastive": bool}}``; ``None`` or empty: one
            model, ``"pretrained"``, with the objective as configured.

    Returns:
        ``{arm: final checkpoint}`` and the summary results.json records: ``iteration1``
        (and ``iteration2``) target summaries, each arm's switches and ``valid/*`` metrics,
        and ``timings`` in seconds.
    """
    run_dir = Path(run_dir)
    timings, summary = {}, {}
    start = time.perf_counter()
    manifests, targets = iteration1_targets(data, run_dir, target_config, seed=setup.seed)
    summary["iteration1"] = targets.summary()
    timings["labels_iteration1_s"] = time.perf_counter() - start
    if target_config.iterations >= 2:
        # iteration 1 model: plain HuBERT on the MFCC targets (Hsu et al., 2021)
        start = time.perf_counter()
        teacher_objective = masked_prediction_objective(
            objective,
            targets.kmeans.n_clusters,
            targets.label_rate,
            {"mixing": False, "contrastive": False},
        )
        teacher, teacher_result = pretrain_on_targets(
            setup, teacher_objective, targets, run_dir / "pretrain" / "iteration1"
        )
        teacher_encoder = load_encoder(teacher)
        with distributed.main_process_first("iteration-2 targets"):
            targets = hidden_targets(
                manifests,
                run_dir / "labels",
                teacher_encoder,
                target_config,
                # one label per output frame of the teacher: 50 Hz for the Base CNN and
                # mel stacks of 2, 25 Hz for stacks of 4
                label_rate=teacher_encoder.frame_rate,
                teacher_name=teacher.stem,
                seed=setup.seed,
            )
        summary["iteration2"] = {
            **targets.summary(),
            "teacher": str(teacher),
            "teacher_valid_loss": teacher_result.get("valid/loss"),
        }
        timings["iteration1_model_and_labels_iteration2_s"] = time.perf_counter() - start
    checkpoints = {}
    for arm, switches in (dict(arms) if arms else {"pretrained": None}).items():
        start = time.perf_counter()
        arm_objective = masked_prediction_objective(
            objective, targets.kmeans.n_clusters, targets.label_rate, switches
        )
        checkpoint, result = pretrain_on_targets(
            setup, arm_objective, targets, run_dir / "pretrain" / arm
        )
        checkpoints[arm] = checkpoint
        summary[arm] = {
            "checkpoint": str(checkpoint),
            "mixing": arm_objective.mixing.enabled,
            "contrastive": arm_objective.contrastive.enabled,
            **{key: value for key, value in result.items() if key.startswith("valid/")},
        }
        timings[f"pretrain_{arm}_s"] = time.perf_counter() - start
    summary["timings"] = timings
    return checkpoints, summary
