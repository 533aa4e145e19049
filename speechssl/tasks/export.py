"""``speechssl export SOURCE OUT_DIR [--format safetensors|onnx]``.

``SOURCE`` is anything :func:`speechssl.load_encoder` opens (a training checkpoint, an
export, a torchaudio / fairseq / unilm file, a Hugging Face folder, a preset name) or a
fine-tuning run folder of ``recipes/finetune/run.py`` (it holds ``model.json``).

- ``--format safetensors`` (default) writes ``model.safetensors`` + ``config.json`` that
  load with :func:`speechssl.load_encoder` and nothing of the training code; from a run
  folder, the fine-tuned encoder.
- ``--format onnx`` writes ``model.onnx`` + ``config.json`` (see
  :mod:`speechssl.encoders.onnx_export`): the encoder, or from a run folder the encoder and
  its classifier head, whose single output ``probabilities (B, C)`` follows
  ``config.json``'s ``labels`` (what ``speechssl predict`` prints, without PyTorch).

The ONNX classifier's inputs are checked by :class:`OnnxClassifier` (the documented way to
run it; ``config.json``'s ``input_checks`` says the same): ``waveform (B, T)`` float32 (or
float64 / int16 PCM, converted as every encoder converts them) and ``lengths (B,)``
integers in ``[min_samples, T]``, where ``min_samples`` is 100 ms, the shortest clip
``speechssl predict`` accepts. The graph itself has no assert (ONNX has no such op): fed
directly, a length beyond ``T`` or below one frame gives meaningless probabilities.

A folder holds one export: ``OUT_DIR`` must be new or empty; ``--force`` replaces the export
(or other files) there, after removing an earlier export's files, so that a safetensors
export and an ONNX one never mix their ``config.json``. Files follow the umask.

Example::

    speechssl export runs/hubert/checkpoints/last.pt exported/hubert
    speechssl export runs/finetune exported/classifier --format onnx
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from speechssl.data.prepare.common import MIN_DURATION_S
from speechssl.encoders.onnx_export import (
    CLASSIFIER_OUTPUTS,
    ONNX_NAME,
    EncoderGraph,
    export_onnx,
)
from speechssl.loading import CONFIG_NAME, WEIGHTS_NAME, load_encoder, save_encoder
from speechssl.safe_io import claim_output_folder, read_json
from speechssl.tasks.predict import MODEL_FILE, load_run

FORMATS = ("safetensors", "onnx")
# the files an export may consist of (ONNX keeps large weights in model.onnx.data)
EXPORT_FILES = (WEIGHTS_NAME, ONNX_NAME, f"{ONNX_NAME}.data", CONFIG_NAME)


class ClassifierGraph(nn.Module):
    """``(waveform (B, T), lengths (B,)) -> probabilities (B, C)`` of a fine-tuned run."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, waveform: Tensor, lengths: Tensor) -> Tensor:
        return torch.softmax(self.model.logits(waveform, lengths), dim=-1)


def min_input_samples(sample_rate: int) -> int:
    """The shortest clip a classifier takes, in samples: what ``speechssl predict`` refuses
    below (``too-short``, 100 ms).

    Example:
        >>> min_input_samples(16000)
        1600
    """
    return math.ceil(MIN_DURATION_S * sample_rate)


def check_classifier_inputs(waveform, lengths, sample_rate: int = 16000):
    """``(waveform (B, T) float32, lengths (B,) int64)`` NumPy arrays for the ONNX
    classifier, or one ``ValueError`` saying what is wrong.

    float64 becomes float32 and int16/int32 PCM is scaled to [-1, 1) (as every encoder
    converts them); each length must lie in ``[min_input_samples(sample_rate), T]``.

    Example:
        >>> wav, lengths = check_classifier_inputs(np.zeros((1, 3200)), [3200])
        >>> wav.dtype, lengths.tolist()
        (dtype('float32'), [3200])
        >>> check_classifier_inputs(np.zeros((1, 3200), np.float32), [4000])
        Traceback (most recent call last):
            ...
        ValueError: lengths must lie in [1600, 3200] samples (at least 100 ms, at most the padded length); got [4000]
    """
    waveform = np.asarray(waveform)
    if waveform.dtype == np.int16 or waveform.dtype == np.int32:
        waveform = waveform.astype(np.float32) / np.float32(2 ** (8 * waveform.itemsize - 1))
    elif waveform.dtype == np.float64:
        waveform = waveform.astype(np.float32)
    elif waveform.dtype != np.float32:
        raise ValueError(f"waveform must be float32 samples or int16 PCM, got {waveform.dtype}")
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be (batch, samples), got shape {waveform.shape}")
    lengths = np.asarray(lengths)
    if lengths.shape != (waveform.shape[0],) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be {waveform.shape[0]} integers (one per clip), got {lengths!r}"[:200]
        )
    low, high = min_input_samples(sample_rate), waveform.shape[1]
    if ((lengths < low) | (lengths > high)).any():
        raise ValueError(
            f"lengths must lie in [{low}, {high}] samples (at least {MIN_DURATION_S * 1000:.0f} "
            f"ms, at most the padded length); got {lengths.tolist()}"[:280]
        )
    return waveform, lengths.astype(np.int64)


class OnnxClassifier:
    """An exported ONNX classifier (``speechssl export RUN_DIR OUT --format onnx``) run by
    onnxruntime, with its inputs checked first (:func:`check_classifier_inputs`).

    Example::

        classifier = OnnxClassifier("exported/classifier")
        probabilities = classifier(wav, lengths)  # (B, C), columns classifier.labels
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        # onnxruntime is optional (a dev dependency): only this wrapper needs it
        import onnxruntime

        folder = Path(folder)
        config = read_json(folder / CONFIG_NAME, CONFIG_NAME)
        if not isinstance(config, dict) or not isinstance(config.get("labels"), list):
            raise ValueError(f"{folder / CONFIG_NAME}: not an ONNX classifier export (no labels)")  # noqa: TRY004 - bad data
        self.labels = list(config["labels"])
        self.sample_rate = int(config.get("sample_rate", 16000))
        self.session = onnxruntime.InferenceSession(str(folder / ONNX_NAME))

    def __call__(self, waveform, lengths) -> np.ndarray:
        """``(B, T)`` samples at ``self.sample_rate`` and ``(B,)`` lengths -> ``(B, C)``."""
        waveform, lengths = check_classifier_inputs(waveform, lengths, self.sample_rate)
        (probabilities,) = self.session.run(None, {"waveform": waveform, "lengths": lengths})
        return probabilities


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        help="a checkpoint, export, public encoder file or folder, or a fine-tuning run folder",
    )
    parser.add_argument("out_dir", help="directory to write the export to")
    parser.add_argument(
        "--format",
        default="safetensors",
        help="safetensors (default: model.safetensors + config.json) or onnx (model.onnx + config.json)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into OUT_DIR even if it is not empty (an earlier export there is replaced)",
    )


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {args.format!r}")
    source = Path(args.checkpoint)
    is_run = (source / MODEL_FILE).is_file()
    # the source opens first: a bad source leaves the folder as it was
    loaded = load_run(source) if is_run else None
    encoder = None if is_run else load_encoder(args.checkpoint)
    out_dir = Path(args.out_dir)
    existed = out_dir.exists()
    claim_export_folder(out_dir, force=args.force)
    try:
        return _export(args, encoder, loaded, source)
    except BaseException:
        if not existed:  # a failed export leaves no folder it created
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _export(args: argparse.Namespace, encoder, loaded, source: Path) -> int:
    if loaded is not None:
        return _export_run(loaded, source, Path(args.out_dir), args.format)
    parameters = sum(parameter.numel() for parameter in encoder.parameters())
    if args.format == "onnx":
        spec = encoder.spec()
        out_dir = export_onnx(
            EncoderGraph(encoder), args.out_dir, family=spec["family"], config=spec["config"]
        )
    else:
        out_dir = save_encoder(encoder, args.out_dir)
    print(
        f"exported {encoder.family} encoder ({parameters / 1e6:.1f} M parameters) to {out_dir} "
        f"({args.format})"
    )
    return 0


def claim_export_folder(out_dir: str | Path, force: bool = False) -> Path:
    """``out_dir`` made ready for one export: new or empty, or (``force``) emptied of an
    earlier export's files; one line otherwise."""
    folder = claim_output_folder(out_dir, "export", force=force, reuse=False)
    for name in EXPORT_FILES:
        (folder / name).unlink(missing_ok=True)
    return folder


def _export_run(loaded, run_dir: Path, out_dir: Path, export_format: str) -> int:
    encoder = loaded.model.encoder
    if export_format == "safetensors":
        save_encoder(encoder, out_dir)
        print(f"exported the fine-tuned {encoder.family} encoder of {run_dir} to {out_dir}")
        return 0
    spec = encoder.spec()
    export_onnx(
        ClassifierGraph(loaded.model),
        out_dir,
        family=spec["family"],
        config=spec["config"],
        output_names=CLASSIFIER_OUTPUTS,
        extra={
            "labels": loaded.labels,
            "head": loaded.info["head"],
            "input_checks": {
                "lengths": "each in [min_samples, samples]",
                "min_samples": min_input_samples(16000),
                "wrapper": "speechssl.tasks.export.OnnxClassifier",
            },
        },
    )
    print(
        f"exported the {encoder.family} encoder + classifier ({len(loaded.labels)} classes) of "
        f"{run_dir} to {out_dir} (onnx)"
    )
    return 0
