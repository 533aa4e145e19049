"""One door to encoders: :func:`load_encoder` opens every format an upstream comes in.

Three lines take an encoder into another project::

    import speechssl
    encoder = speechssl.load_encoder("runs/hubert/checkpoints/last.pt")  # or any spec below
    out = encoder(wav, lengths)  # EncoderOutput(last_hidden_state, hidden_states, lengths)

Accepted specs (each file is opened once, weights-only):

- ``fbank``: log-mel filterbanks (no learned weights);
- a preset name of :data:`speechssl.encoders.PRESETS` (``hubert_base``, ``wavlm_tiny``, ...):
  random weights drawn from ``seed``;
- a speechssl training checkpoint (``model`` state dict + ``encoder_spec``);
- a speechssl export directory (``model.safetensors`` + ``config.json``) or either file;
- a torchaudio ``Wav2Vec2Model`` state dict (HuBERT, wav2vec 2.0 or WavLM), bare or as
  ``{"state_dict", "preset"}``;
- a fairseq HuBERT / wav2vec 2.0 checkpoint, or a unilm/fairseq WavLM one;
- a Hugging Face ``transformers`` folder (HuBERT, wav2vec 2.0, UniSpeech-SAT, WavLM).

Anything else fails with one short line that names what was found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .checkpoint_format import Checkpoint
from .encoders import PRESETS, build_encoder
from .encoders.base import Encoder
from .encoders.checkpoint_files import read_checkpoint
from .encoders.fbank_upstream import FbankUpstream
from .encoders.wav2vec2 import convert as wav2vec2_convert
from .encoders.wavlm import convert as wavlm_convert
from .safe_io import atomic_path, load_state_strict, read_json, short_reason, write_text_atomic

__all__ = [
    "CONFIG_NAME",
    "KINDS",
    "WEIGHTS_NAME",
    "OpenedEncoder",
    "load_encoder",
    "load_state",
    "open_encoder",
    "save_encoder",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

# what open_encoder reports a spec to be
KINDS = ("fbank", "preset", "speechssl", "torchaudio", "fairseq", "unilm", "huggingface")


class OpenedEncoder(NamedTuple):
    """An encoder (eval mode) and the format it came from (one of :data:`KINDS`)."""

    encoder: Encoder
    kind: str


def speechssl_version() -> str:
    try:
        from importlib.metadata import version

        return version("speechssl")
    except Exception:  # noqa: BLE001 - not installed as a distribution (e.g. a torch.hub clone)
        return "0+unknown"


def load_encoder(
    spec: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    seed: int = 0,
    n_mels: int = 80,
) -> Encoder:
    """The encoder ``spec`` names (see the module docstring), in eval mode on ``map_location``.

    Args:
        spec: ``fbank``, a preset name, or a path to a checkpoint, export or folder.
        map_location: device of the returned encoder.
        seed: seed of a preset's random weights (the global RNG is left untouched).
        n_mels: filterbank bins of ``fbank``.

    Raises:
        FileNotFoundError: a path with nothing there.
        ValueError: a file of no known format, truncated or corrupt, or whose weights do not
            fit the architecture it describes (one line each).
    """
    return open_encoder(spec, map_location, seed=seed, n_mels=n_mels).encoder


def open_encoder(
    spec: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    *,
    seed: int = 0,
    n_mels: int = 80,
) -> OpenedEncoder:
    """:func:`load_encoder` that also says which format the spec was (``kind``)."""
    text = str(spec).strip()
    if text == "fbank":
        encoder, kind = FbankUpstream(n_mels=n_mels), "fbank"
    elif text in PRESETS and not Path(text).exists():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder, kind = build_encoder(text), "preset"
    else:
        encoder, kind = _open_path(Path(text).expanduser())
    return OpenedEncoder(encoder.to(map_location).eval(), kind)


def _open_path(path: Path) -> tuple[Encoder, str]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or folder, and not 'fbank' or a preset name "
            "(speechssl.encoders.PRESETS)"
        )
    if path.is_dir():
        values = _read_json(path / CONFIG_NAME)
        if "family" in values:
            return _open_export(path, values), "speechssl"
        if values.get("model_type") == "wavlm":
            return wavlm_convert.from_huggingface(path), "huggingface"
        if "model_type" in values:
            return wav2vec2_convert.from_huggingface(path), "huggingface"
        raise ValueError(
            f"{path / CONFIG_NAME} is neither a speechssl export (no 'family') nor a "
            "Hugging Face config (no 'model_type')"
        )
    if path.name == CONFIG_NAME or path.suffix == ".safetensors":
        return _open_export(path.parent, _read_json(path.parent / CONFIG_NAME), path), "speechssl"
    return _open_checkpoint(path, read_checkpoint(path))


def _open_checkpoint(path: Path, payload) -> tuple[Encoder, str]:
    """Tell the format of an unpickled file by its structure and convert it."""
    source = str(path)
    if isinstance(payload, dict):
        keys = [str(key) for key in payload]
        if "encoder_spec" in payload or {"model", "config"} <= payload.keys():
            return _open_training_checkpoint(path, payload), "speechssl"
        if "model" in payload and ("cfg" in payload or "args" in payload):
            state = payload["model"]
            if isinstance(state, dict) and wavlm_convert.is_wavlm_state(state):
                return wavlm_convert.encoder_from_unilm(payload, source=source), "unilm"
            return wav2vec2_convert.encoder_from_fairseq(payload, source=source), "fairseq"
        state = payload.get("state_dict", payload)
        if isinstance(state, dict) and any(
            str(key).startswith("feature_extractor.conv_layers.") for key in state
        ):
            if wavlm_convert.is_wavlm_state(state):
                return wavlm_convert.encoder_from_torchaudio_state(payload, source=source), (
                    "torchaudio"
                )
            return wav2vec2_convert.encoder_from_torchaudio_state(payload, source=source), (
                "torchaudio"
            )
        tensors = sum(isinstance(value, Tensor) for value in payload.values())
        shown = ", ".join(repr(key) for key in keys[:3]) + (" ..." if len(keys) > 3 else "")
        what = f"a dict of {len(keys)} entries ({tensors} tensors), keys {shown}"
    else:
        what = f"a {type(payload).__name__}"
    raise ValueError(
        f"{path}: {what}; not a speechssl checkpoint (no 'encoder_spec'), a fairseq/unilm "
        "checkpoint ('model' + 'cfg'/'args') or a torchaudio Wav2Vec2Model state dict"
    )


def _open_training_checkpoint(path: Path, payload: dict) -> Encoder:
    if not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: the checkpoint has no 'model' state dict")  # noqa: TRY004 - bad data, not a bad call
    checkpoint = Checkpoint.from_dict({"step": 0, **payload}, str(path))
    spec = checkpoint.encoder_spec
    if spec is None:
        raise ValueError(
            f"{path}: a training checkpoint with no encoder_spec; it must come from a speechssl "
            "Trainer run whose model keeps its encoder at model.encoder"
        )
    encoder = _build(spec.to_dict(), path)
    load_state(encoder, checkpoint.model, prefix=spec.prefix, source=str(path))
    return encoder


def _open_export(directory: Path, spec: dict, weights_path: Path | None = None) -> Encoder:
    if "family" not in spec:
        raise ValueError(
            f"{directory / CONFIG_NAME}: expected an object with 'family' and 'config'"
        )
    weights_path = weights_path if weights_path and weights_path.suffix == ".safetensors" else None
    weights_path = weights_path or directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} at {weights_path}")
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{weights_path}: truncated or corrupt safetensors file ({error})"
        ) from None
    encoder = _build(spec, directory / CONFIG_NAME)
    load_state(encoder, state, source=str(weights_path))
    return encoder


def _build(spec: dict, source: Path) -> Encoder:
    try:
        return build_encoder({"family": spec["family"], "config": spec.get("config", {})})
    except (TypeError, KeyError, RuntimeError) as error:
        # a damaged or hand-edited config: unknown keys, values of the wrong type, or sizes
        # torch cannot allocate (RuntimeError from a layer's constructor)
        raise ValueError(
            f"{source}: the {spec['family']!r} encoder config is not usable ({short_reason(error)})"
        ) from None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no readable {CONFIG_NAME} in {path.parent}")
    values = read_json(path, CONFIG_NAME)  # bounded size and depth, one-line failures
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(values).__name__}")  # noqa: TRY004 - bad data
    return values


def load_state(
    encoder: Encoder, state: dict[str, Tensor], prefix: str = "", source: str = ""
) -> None:
    """Load the ``prefix``-ed entries of ``state`` into ``encoder``, strictly."""
    load_state_strict(encoder, state, source, prefix, name=f"{encoder.family} encoder")


def save_encoder(encoder: Encoder, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/model.safetensors`` + ``out_dir/config.json`` and return ``out_dir``.

    The export needs nothing of the training code: ``load_encoder(out_dir)`` rebuilds it.
    Each file is written atomically (a temporary file renamed over it): a kill or a full
    disk leaves the earlier export whole, never half a weights file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage: give each tensor its own copy
    state = {
        key: value.detach().cpu().contiguous().clone()
        for key, value in encoder.state_dict().items()
    }
    spec = encoder.spec()
    config = {
        "family": spec["family"],
        "config": spec["config"],
        "speechssl_version": speechssl_version(),
    }
    with atomic_path(out_dir / WEIGHTS_NAME, durable=True) as temporary:
        save_file(state, str(temporary), metadata={"family": spec["family"]})
    write_text_atomic(out_dir / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out_dir
