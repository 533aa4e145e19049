"""Load an encoder from any speechssl checkpoint, and save one for export.

Three lines take an encoder into another project::

    import speechssl
    encoder = speechssl.load_encoder("runs/hubert/checkpoints/last.pt")  # or an export dir
    out = encoder(wav, lengths)  # EncoderOutput(last_hidden_state, hidden_states, lengths)

Accepted paths:
- a training checkpoint (``torch.save`` dict with ``model`` = the model state dict and
  ``encoder_spec`` = ``{"family", "config", "prefix"}``), read with ``weights_only=True``;
- an export directory holding ``model.safetensors`` + ``config.json`` (``speechssl export``),
  or either of those two files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from .encoders import build_encoder
from .encoders.base import Encoder
from .safe_io import load_state_strict, load_torch_file, short_reason

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def speechssl_version() -> str:
    try:
        from importlib.metadata import version

        return version("speechssl")
    except Exception:  # noqa: BLE001 - not installed as a distribution (e.g. a torch.hub clone)
        return "0+unknown"


def load_encoder(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Encoder:
    """Rebuild the encoder stored at ``path`` and return it in eval mode.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: a truncated/corrupt file, an unknown family, or weights that do not fit
            the encoder (the message names the missing keys).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint or export at {path}")
    if path.is_dir() or path.name == CONFIG_NAME or path.suffix == ".safetensors":
        directory = path if path.is_dir() else path.parent
        weights_path = path if path.suffix == ".safetensors" else directory / WEIGHTS_NAME
        spec = _read_export_config(directory / CONFIG_NAME)
        state = _read_safetensors(weights_path)
        prefix = ""
    else:
        checkpoint = _read_training_checkpoint(path)
        spec = checkpoint.get("encoder_spec")
        if not isinstance(spec, dict) or "family" not in spec:
            raise ValueError(
                f"{path}: no encoder_spec in the checkpoint (keys: {sorted(map(str, checkpoint))[:8]}); it must "
                "come from a speechssl Trainer run whose model keeps its encoder at model.encoder"
            )
        state = checkpoint.get("model")
        if not isinstance(state, dict):
            raise ValueError(f"{path}: the checkpoint has no 'model' state dict")
        prefix = spec.get("prefix", "")
    try:
        encoder = build_encoder({"family": spec["family"], "config": spec.get("config", {})})
    except (TypeError, KeyError, RuntimeError) as error:
        # a damaged or hand-edited config: unknown keys, values of the wrong type, or sizes
        # torch cannot allocate (RuntimeError from a layer's constructor)
        raise ValueError(
            f"{path}: the {spec['family']!r} encoder config is not usable ({short_reason(error)})"
        ) from None
    load_state(encoder, state, prefix=prefix, source=str(path))
    return encoder.to(map_location).eval()


def load_state(
    encoder: Encoder, state: dict[str, Tensor], prefix: str = "", source: str = ""
) -> None:
    """Load the ``prefix``-ed entries of ``state`` into ``encoder``, strictly."""
    load_state_strict(encoder, state, source, prefix, name=f"{encoder.family} encoder")


def save_encoder(encoder: Encoder, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/model.safetensors`` + ``out_dir/config.json`` and return ``out_dir``.

    The export needs nothing of the training code: ``load_encoder(out_dir)`` rebuilds it.
    """
    from safetensors.torch import save_file

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
    save_file(state, str(out_dir / WEIGHTS_NAME), metadata={"family": spec["family"]})
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def _read_export_config(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} beside the weights at {path.parent}")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(spec, dict) or "family" not in spec:
        raise ValueError(f"{path}: expected an object with 'family' and 'config'")
    return spec


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} at {path}")
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:
        raise ValueError(f"{path}: truncated or corrupt safetensors file ({error})") from error


def _read_training_checkpoint(path: Path) -> dict:
    checkpoint = load_torch_file(path, "checkpoint")
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")  # noqa: TRY004 - bad data, not a bad call
    return checkpoint
