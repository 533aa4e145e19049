"""``speechssl predict RUN_DIR a.wav b.wav [--json] [--top K]``: classify audio files with a
run of ``recipes/finetune/run.py``.

A fine-tuning run writes ``RUN_DIR/model.json``: the labels, the upstream spec, the
encoder's architecture (``encoder_spec``), the head config, the batching, and the path of
the checkpoint holding the trained weights (``train/checkpoints/best.pt``, the best
validation accuracy). :func:`load_run` rebuilds the model from it without the original
upstream file (the checkpoint holds the encoder's weights too).

Files that are missing or unreadable are reported on one line each (stderr); the others
still get predictions; the exit code is 1 when any file failed.

Example (a table by default, JSON lines with ``--json``)::

    $ speechssl predict runs/finetune a.wav b.wav --top 2
    file    prediction  probabilities
    a.wav   ang         ang 0.71  hap 0.15
    b.wav   sad         sad 0.88  neu 0.07
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import torch

from speechssl.checkpoint_format import CheckpointError, EncoderSpec, read_checkpoint
from speechssl.data.compact import Manifest
from speechssl.data.loaders import DataConfig
from speechssl.data.prepare.common import check_audio
from speechssl.encoders import build_encoder
from speechssl.heads import FbankUpstream, build_transfer_model, head_config
from speechssl.safe_io import load_state_strict, read_json, short_reason, write_text_atomic
from speechssl.tasks.classification import TransferConfig, predict
from speechssl.typed import to_dataclass

__all__ = [
    "MODEL_FILE",
    "LoadedRun",
    "add_arguments",
    "load_run",
    "predict_files",
    "run",
    "write_model_file",
]

MODEL_FILE = "model.json"


class LoadedRun(NamedTuple):
    """A trained classifier (eval mode), its labels and the batching it was evaluated with."""

    model: object
    labels: list[str]
    transfer_config: object
    info: dict


def write_model_file(
    run_dir: str | os.PathLike, trained, *, upstream: str, upstream_kind: str, head, labels, data
) -> Path:
    """Write ``run_dir/model.json`` for :func:`load_run`; returns the checkpoint path.

    ``trained`` is :class:`speechssl.tasks.classification.TrainedClassifier`; its
    ``checkpoint`` (the returned model's weights: best on dev, else the last) is used.
    """
    run_dir = Path(run_dir)
    checkpoint = trained.checkpoint
    if checkpoint is None or not Path(checkpoint).is_file():
        raise ValueError(f"no checkpoint found in {Path(trained.run_dir) / 'checkpoints'}")
    encoder = trained.model.encoder
    info = {
        "labels": list(labels),
        "upstream": upstream,
        "upstream_kind": upstream_kind,
        "encoder_spec": EncoderSpec.of(encoder).to_dict(with_prefix=False),
        "head": dataclasses.asdict(head),
        "data": dataclasses.asdict(data),
        "checkpoint": os.path.relpath(checkpoint, run_dir),
    }
    write_text_atomic(run_dir / MODEL_FILE, json.dumps(info, indent=2) + "\n")
    return checkpoint


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> LoadedRun:
    """Rebuild the classifier of a fine-tuning run from ``run_dir/model.json``.

    Raises:
        ValueError: not a finished fine-tuning run, or a checkpoint that does not fit.
    """
    run_dir = Path(run_dir)
    model_file = run_dir / MODEL_FILE
    if not model_file.is_file():
        raise ValueError(
            f"{run_dir} is not a finished fine-tuning run ({MODEL_FILE} missing); "
            "train one with recipes/finetune/run.py"
        )
    info = _read_model_file(model_file)
    spec = EncoderSpec.from_dict(info["encoder_spec"], str(model_file))
    try:
        # typed and checked before use: unknown keys or a string where a number belongs
        data = to_dataclass({**info["data"], "num_workers": 0}, DataConfig)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{model_file}: 'data' is not a data config ({short_reason(error)})"
        ) from None
    try:
        # FbankUpstream is no family of build_encoder (it has no learned weights)
        if spec.family == "fbank":
            encoder = FbankUpstream.from_config(spec.config)
        else:
            encoder = build_encoder(spec.to_dict(with_prefix=False))
        head = head_config(info["head"])
        model = build_transfer_model(head, encoder, num_classes=len(info["labels"]))
    except (TypeError, KeyError, RuntimeError, ValueError) as error:
        # a hand-edited or damaged model.json: options the classes do not take, values of
        # the wrong type, or sizes torch cannot allocate (RuntimeError from a constructor)
        raise ValueError(
            f"{model_file}: does not describe a model ({short_reason(error)})"
        ) from None
    try:
        checkpoint = read_checkpoint(run_dir / info["checkpoint"])
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    load_state_strict(model, checkpoint.model, f"{info['checkpoint']} (for {MODEL_FILE})")
    model = model.to(check_device(device)).eval()
    config = TransferConfig(data=data)
    return LoadedRun(model, list(info["labels"]), config, info)


# model.json keys and the types a run writes for them
_MODEL_FILE_TYPES = {
    "labels": list,
    "encoder_spec": dict,
    "head": dict,
    "data": dict,
    "checkpoint": str,
}


def _model_file_problem(info) -> str | None:
    """What is wrong with the parsed ``model.json`` (None: the types a run writes)."""
    if not isinstance(info, dict):
        return "expected a JSON object"
    for key, kind in _MODEL_FILE_TYPES.items():
        if not isinstance(info.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    try:
        EncoderSpec.from_dict(info["encoder_spec"])
    except CheckpointError:
        return "encoder_spec needs a 'family' and a 'config' object"
    labels = info["labels"]
    if not labels or not all(isinstance(label, str) for label in labels):
        return "'labels' must be a list of strings"
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        # a repeated name would print one class's probability under another's name
        return f"'labels' names a class twice ({', '.join(repeated)})"
    return None


def _read_model_file(path: Path) -> dict:
    """``model.json`` as a dict whose keys have the types a run writes; one line otherwise."""
    try:
        info = read_json(path, MODEL_FILE)  # bounded size and depth
    except ValueError as error:
        raise ValueError(f"damaged {MODEL_FILE}: {error}") from None
    problem = _model_file_problem(info)
    if problem:
        raise ValueError(f"{path}: damaged, {problem}")
    return info


def check_device(name: str) -> torch.device:
    """``torch.device(name)`` after checking this machine has it; one line otherwise.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    try:
        device = torch.device(name)
        torch.empty(0, device=device)  # raises when the device type is absent here
    except (RuntimeError, AssertionError) as error:
        raise ValueError(
            f"--device {name}: not available on this machine ({short_reason(error)}); "
            "use --device cpu"
        ) from None
    return device


def predict_files(loaded: LoadedRun, paths: list[str]) -> tuple[list[dict], list[str]]:
    """``(results, errors)``: per readable file ``{"path", "label", "probabilities"}`` in the
    given order, and one message per file that could not be read."""
    rows, errors = [], []
    for index, path in enumerate(paths):
        check = check_audio(os.path.abspath(path))
        if check.reason:
            if check.reason == "missing":
                errors.append(f"{path}: no such file")
            else:
                detail = f": {check.detail}" if check.detail else ""
                errors.append(f"{path}: cannot read audio ({check.reason}{detail})")
            continue
        rows.append(
            {
                "id": f"{index:06d}",
                "audio": os.path.abspath(path),
                "duration": check.num_samples / check.sample_rate,
                "sample_rate": check.sample_rate,
                "path": path,
            }
        )
    if not rows:
        return [], errors
    predictions = predict(
        loaded.model, Manifest.from_rows(rows), loaded.transfer_config, label_column=None
    )
    results = []
    for row, predicted, probabilities in zip(rows, predictions.y_pred, predictions.probabilities):
        results.append(
            {
                "path": row["path"],
                "label": loaded.labels[int(predicted)],
                "probabilities": {
                    label: float(p) for label, p in zip(loaded.labels, probabilities.tolist())
                },
            }
        )
    return results, errors


def _top(probabilities: dict[str, float], k: int) -> list[tuple[str, float]]:
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    return ranked[:k] if k > 0 else ranked


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``speechssl predict``."""
    parser.add_argument(
        "run_dir", help="a run folder of recipes/finetune/run.py (holds model.json)"
    )
    parser.add_argument("files", nargs="+", help="audio files to classify")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per file instead of a table"
    )
    parser.add_argument(
        "--top",
        type=int,
        default=0,
        metavar="K",
        help="show the K most probable classes (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``speechssl predict``: print predictions; 1 if any file failed."""
    if args.top < 0:
        raise ValueError(f"--top must be >= 0, got {args.top}")
    check_device(args.device)  # before any work
    loaded = load_run(args.run_dir, device=args.device)
    results, errors = predict_files(loaded, list(args.files))
    for message in errors:
        print(f"speechssl predict: {message}", file=sys.stderr)
    if args.json:
        for result in results:
            ranked = dict(_top(result["probabilities"], args.top))
            print(
                json.dumps({**result, "probabilities": {k: round(v, 6) for k, v in ranked.items()}})
            )
    elif results:
        width = max(len("file"), *(len(result["path"]) for result in results))
        label_width = max(len("prediction"), *(len(label) for label in loaded.labels))
        print(f"{'file':<{width}}  {'prediction':<{label_width}}  probabilities")
        for result in results:
            ranked = "  ".join(
                f"{label} {p:.3f}" for label, p in _top(result["probabilities"], args.top)
            )
            print(f"{result['path']:<{width}}  {result['label']:<{label_width}}  {ranked}")
    return 1 if errors else 0
