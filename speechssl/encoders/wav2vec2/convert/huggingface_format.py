"""Hugging Face ``transformers`` wav2vec 2.0 / HuBERT / UniSpeech-SAT folders <-> speechssl.

:func:`from_huggingface` reads a local model directory (never a hub) and
:func:`to_huggingface` writes a ``HubertModel`` or ``UniSpeechSatModel`` directory.
``transformers`` is an optional dependency (the ``dev`` extras): it is imported inside the
functions that need it.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torchaudio.models.wav2vec2.utils import import_huggingface_model

from speechssl.encoders.checkpoint_files import read_checkpoint
from speechssl.safe_io import check_state_fits, read_json, short_reason

from ..model import Wav2Vec2Encoder
from .torchaudio_format import from_torchaudio, speechssl_to_torchaudio_key


def torchaudio_to_huggingface_key(key: str) -> str:
    if key.startswith("encoder.feature_projection."):
        return key[len("encoder.") :]
    if key.startswith("encoder.transformer."):
        return "encoder." + key[len("encoder.transformer.") :]
    return key


def from_huggingface(
    directory: str | os.PathLike, padding_invariant: bool = False
) -> Wav2Vec2Encoder:
    """A local ``transformers`` wav2vec 2.0 / HuBERT / UniSpeech-SAT directory -> our encoder.

    The model is built from ``config.json`` and its weights are read from
    ``model.safetensors`` or ``pytorch_model.bin`` in the folder (never from a hub), then
    converted through torchaudio's ``import_huggingface_model``; the learned mask
    embedding is carried over too.
    """
    original = load_local_transformers_model(directory).eval()
    encoder = from_torchaudio(
        import_huggingface_model(original), padding_invariant=padding_invariant
    )
    mask_embedding = getattr(original, "masked_spec_embed", None)
    if mask_embedding is not None:
        encoder.mask_embedding.data.copy_(mask_embedding.detach())
    return encoder.eval()


def load_local_transformers_model(directory: str | os.PathLike):
    """Build a ``transformers`` base model from a local folder without any hub call.

    Weights saved from a task model (e.g. ``HubertForCTC``) carry the base model's prefix
    (``hubert.``); it is stripped so the base model loads them. A damaged folder (bad
    JSON, unusable config, truncated or poisoned weights, wrong shapes) is one line.
    """
    # transformers is optional (dev extras): imported only when a folder is converted;
    # huggingface_hub comes with it
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig, AutoModel

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no transformers model directory at {directory} (config.json missing)"
        )
    values = read_json(config_path, "config.json")  # bounded size and depth
    model_type = values.pop("model_type", None) if isinstance(values, dict) else None
    if not isinstance(model_type, str):
        raise ValueError(f"{config_path} has no model_type")  # noqa: TRY004 - bad data, not a bad call
    try:
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **values))
    except (TypeError, ValueError, KeyError, AttributeError, StrictDataclassError) as error:
        # transformers builds the model from the user's config.json: missing keys or values
        # of the wrong type surface as any of these, from deep inside the model's __init__
        raise ValueError(
            f"{config_path}: not a usable {model_type} config ({short_reason(error)})"
        ) from None
    if (directory / "model.safetensors").is_file():
        try:
            state = load_file(str(directory / "model.safetensors"))
        except SafetensorError as error:
            raise ValueError(
                f"{directory / 'model.safetensors'}: truncated or corrupt safetensors file "
                f"({short_reason(error)})"
            ) from None
    elif (directory / "pytorch_model.bin").is_file():
        state = read_checkpoint(directory / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {directory}")
    if not isinstance(state, dict):
        raise ValueError(f"{directory}: the weights file holds no state dict")  # noqa: TRY004 - bad data
    prefix = f"{model.base_model_prefix}."
    state = {str(key).removeprefix(prefix): value for key, value in state.items()}
    check_state_fits(model, state, str(directory), strict=False)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{directory}: weights missing for {len(missing)} parameters ({shown})")
    return model


def huggingface_config_arguments(config) -> dict:
    """The ``transformers`` config keywords every wav2vec2-family encoder shares (sizes,
    dropouts, conv extractor, position convolution; SpecAugment off), from our config."""
    return {
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.ffn_dim,
        "hidden_act": "gelu",
        "hidden_dropout": config.dropout,
        "activation_dropout": config.activation_dropout,
        "attention_dropout": config.attention_dropout,
        "feat_proj_dropout": config.dropout_input,
        "layerdrop": config.layer_drop,
        "layer_norm_eps": config.layer_norm_eps,
        "feat_extract_norm": "group" if config.extractor_mode == "group_norm" else "layer",
        "feat_extract_activation": "gelu",
        "conv_dim": list(config.conv_channels),
        "conv_stride": list(config.conv_strides),
        "conv_kernel": list(config.conv_kernels),
        "conv_bias": config.conv_bias,
        "num_conv_pos_embeddings": config.pos_conv_kernel,
        "num_conv_pos_embedding_groups": config.pos_conv_groups,
        "do_stable_layer_norm": config.layer_norm_first,
        "apply_spec_augment": False,
    }


def to_huggingface(
    encoder: Wav2Vec2Encoder, out_dir: str | os.PathLike, model_type: str = "hubert"
) -> Path:
    """Write our wav2vec2-family encoder as a ``transformers`` directory that
    ``transformers``' ``HubertModel`` (``model_type="hubert"``) or ``UniSpeechSatModel``
    (``"unispeech-sat"``) loads from the folder with equal
    outputs. SpecAugment is switched off in the written config so training-mode outputs
    differ only by dropout; set ``apply_spec_augment`` there to fine-tune the HF way.
    """
    # transformers is optional (dev extras): imported only when a folder is written
    import transformers

    if not isinstance(encoder, Wav2Vec2Encoder):
        raise TypeError(
            f"to_huggingface needs a wav2vec2-family encoder, got {type(encoder).__name__}"
        )
    encoder.require_conv_front_end("Hugging Face")
    classes = {
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
        "unispeech-sat": (transformers.UniSpeechSatConfig, transformers.UniSpeechSatModel),
    }
    if model_type not in classes:
        raise ValueError(f"model_type must be one of {sorted(classes)}, got {model_type!r}")
    config_class, model_class = classes[model_type]
    config = encoder.config
    extra = {"feat_proj_layer_norm": True} if model_type == "hubert" else {}
    hf_config = config_class(
        **huggingface_config_arguments(config),
        **extra,
    )
    model = model_class(hf_config)
    state = {}
    for key, value in encoder.state_dict().items():
        if key == "mask_embedding":
            state["masked_spec_embed"] = value.detach().clone()
            continue
        state[torchaudio_to_huggingface_key(speechssl_to_torchaudio_key(key))] = (
            value.detach().clone()
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit {model_class.__name__}: missing {missing}, unexpected {unexpected}"
        )
    model.load_state_dict(state, strict=True)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    return out_dir
