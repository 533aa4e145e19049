"""Weight-exact conversion between speechssl's WavLM encoder and its peers.

- torchaudio: :func:`from_torchaudio` / :func:`to_torchaudio` (``wavlm_model``,
  ``wavlm_base``, ``wavlm_large``) and :func:`encoder_from_torchaudio_state` (a saved state
  dict, its preset recognised from the shapes or named beside it);
- Hugging Face: :func:`from_huggingface` (a local ``WavLMModel`` folder) and
  :func:`to_huggingface` (writes one);
- unilm / fairseq: :func:`encoder_from_unilm` / :func:`load_unilm_checkpoint`
  (``WavLM-Base+.pt`` as Microsoft distributes it: ``{"cfg": {...}, "model": {...}}``),
  read weights-only by :func:`speechssl.encoders.checkpoint_files.read_checkpoint`.

Everything but attention maps as for wav2vec 2.0 / HuBERT (the tables of
:mod:`speechssl.encoders.wav2vec2.convert`); the rows below add WavLM's attention. As for
HuBERT, a converted encoder keeps the reference's group-norm statistics over the padded
tail (``masked_group_norm=False``); ``padding_invariant=True`` makes them exact per item.

Example:
    >>> import torchaudio
    >>> encoder = from_torchaudio(torchaudio.models.wavlm_base())
    >>> encoder.config.num_buckets, encoder.config.max_distance
    (320, 800)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

import torch
import torchaudio
from torch import Tensor

from speechssl.encoders.checkpoint_files import read_checkpoint

from ..wav2vec2.convert.fairseq_format import (
    config_value,
    fairseq_config_fields,
    fairseq_model_state,
    fairseq_to_speechssl_key,
    speechssl_to_fairseq_key,
)
from ..wav2vec2.convert.huggingface_format import (
    huggingface_config_arguments,
    load_local_transformers_model,
    torchaudio_to_huggingface_key,
)
from ..wav2vec2.convert.torchaudio_format import (
    TORCHAUDIO_ONLY,
    check_preset_arguments,
    legacy_weight_norm_keys,
    load_exact,
    shape_mismatches,
    speechssl_to_torchaudio_key,
    torchaudio_to_speechssl_key,
)
from .config import WavLMConfig
from .model import WavLMEncoder

TORCHAUDIO_PRESETS = ("wavlm_base", "wavlm_large")

# our attention keys: layer index, parameter kind
_OUR_ATTENTION = re.compile(
    r"transformer\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj|gate_projection|gate_scale)"
    r"(?:\.(weight|bias))?"
)
_OUR_EMBEDDING = "transformer.relative_position_embedding.weight"
# our name -> (torchaudio / Hugging Face name, unilm name) inside a layer's attention
_GATE_NAMES = {
    "gate_projection": ("gru_rel_pos_linear", "grep_linear"),
    "gate_scale": ("gru_rel_pos_const", "grep_a"),
}
_THEIR_EMBEDDING = {
    "torchaudio": "encoder.transformer.layers.0.attention.rel_attn_embed.weight",
    "huggingface": "encoder.layers.0.attention.rel_attn_embed.weight",
    "unilm": "encoder.layers.0.self_attn.relative_attention_bias.weight",
}


def is_wavlm_state(keys) -> bool:
    """Whether parameter names (torchaudio, Hugging Face or unilm) are WavLM's."""
    return any(
        marker in key
        for key in keys
        for marker in ("gru_rel_pos_", "rel_attn_embed", "grep_linear", "relative_attention_bias")
    )


# ---------------------------------------------------------------------------------------
# torchaudio


def config_from_torchaudio(model) -> WavLMConfig:
    """Read the architecture of a torchaudio WavLM ``Wav2Vec2Model`` into a ``WavLMConfig``."""
    conv_layers = model.feature_extractor.conv_layers
    extractor_mode = (
        "group_norm" if isinstance(conv_layers[0].layer_norm, torch.nn.GroupNorm) else "layer_norm"
    )
    transformer = model.encoder.transformer
    first_layer = transformer.layers[0]
    attention = first_layer.attention
    if type(attention).__name__ != "WavLMSelfAttention":
        raise ValueError("not a WavLM model (its attention is not WavLMSelfAttention)")
    pos_conv = transformer.pos_conv_embed
    return WavLMConfig(
        conv_channels=[layer.conv.out_channels for layer in conv_layers],
        conv_kernels=[layer.conv.kernel_size[0] for layer in conv_layers],
        conv_strides=[layer.conv.stride[0] for layer in conv_layers],
        conv_bias=conv_layers[0].conv.bias is not None,
        extractor_mode=extractor_mode,
        masked_group_norm=False,
        embed_dim=pos_conv.embed_dim,
        num_layers=len(transformer.layers),
        num_heads=attention.num_heads,
        ffn_dim=first_layer.feed_forward.intermediate_dense.out_features,
        pos_conv_kernel=pos_conv.kernel_size,
        pos_conv_groups=pos_conv.conv.groups,
        layer_norm_first=first_layer.layer_norm_first,
        dropout_input=model.encoder.feature_projection.dropout.p,
        dropout=first_layer.dropout.p,
        attention_dropout=attention.dropout,
        activation_dropout=first_layer.feed_forward.intermediate_dropout.p,
        layer_drop=transformer.layer_drop,
        num_buckets=attention.num_buckets,
        max_distance=attention.max_distance,
        gated_position_bias=attention.gru_rel_pos,
    )


def _ours_from_torchaudio_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio WavLM state dict -> ours (fused q/k/v split in three)."""
    ours = {}
    for key, value in state.items():
        if key == _THEIR_EMBEDDING["torchaudio"]:
            ours[_OUR_EMBEDDING] = value
            continue
        match = re.fullmatch(r"encoder\.transformer\.layers\.(\d+)\.attention\.(.+)", key)
        if match is None:
            mapped = torchaudio_to_speechssl_key(key)
            if mapped is not None:
                ours[mapped] = value
            continue
        layer, rest = match.groups()
        prefix = f"transformer.layers.{layer}.attention."
        if rest in ("attention.in_proj_weight", "attention.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]  # weight | bias
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                ours[f"{prefix}{name}.{kind}"] = part
        elif rest.startswith("attention.out_proj."):
            ours[prefix + rest[len("attention.") :]] = value
        elif rest.startswith("gru_rel_pos_linear."):
            ours[prefix + "gate_projection." + rest.rsplit(".", 1)[1]] = value
        elif rest == "gru_rel_pos_const":
            ours[prefix + "gate_scale"] = value
        else:
            raise ValueError(f"unexpected torchaudio WavLM key: {key}")
    return ours


def _torchaudio_from_ours(state: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Our WavLM state dict -> torchaudio's (q/k/v fused into ``in_proj``)."""
    theirs = {}
    for key, value in state.items():
        if key == "mask_embedding":
            continue
        if key == _OUR_EMBEDDING:
            theirs[_THEIR_EMBEDDING["torchaudio"]] = value
            continue
        match = _OUR_ATTENTION.fullmatch(key)
        if match is None:
            theirs[speechssl_to_torchaudio_key(key)] = value
            continue
        layer, kind, tensor = match.groups()
        prefix = f"encoder.transformer.layers.{layer}.attention."
        if kind == "out_proj":
            theirs[f"{prefix}attention.out_proj.{tensor}"] = value
        elif kind in _GATE_NAMES:
            suffix = f".{tensor}" if tensor else ""
            theirs[f"{prefix}{_GATE_NAMES[kind][0]}{suffix}"] = value
    for layer in range(num_layers):
        prefix = f"transformer.layers.{layer}.attention."
        for tensor in ("weight", "bias"):
            theirs[f"encoder.transformer.layers.{layer}.attention.attention.in_proj_{tensor}"] = (
                torch.cat(
                    [state[f"{prefix}{name}.{tensor}"] for name in ("q_proj", "k_proj", "v_proj")]
                )
            )
    return theirs


def from_torchaudio(model, padding_invariant: bool = False) -> WavLMEncoder:
    """torchaudio WavLM ``Wav2Vec2Model`` (e.g. ``wavlm_base()``) -> our encoder, same weights."""
    config = config_from_torchaudio(model)
    if padding_invariant:
        config = dataclasses.replace(config, masked_group_norm=True)
    encoder = WavLMEncoder(config)
    state = legacy_weight_norm_keys(model.state_dict())
    state = {key: value.detach().clone() for key, value in state.items()}
    load_exact(encoder, _ours_from_torchaudio_state(state), source="torchaudio WavLM model")
    return encoder.train(model.training)


def torchaudio_arguments(config: WavLMConfig) -> dict:
    """Keyword arguments of ``torchaudio.models.wavlm_model`` for ``config``."""
    return {
        "extractor_mode": config.extractor_mode,
        "extractor_conv_layer_config": list(
            zip(config.conv_channels, config.conv_kernels, config.conv_strides)
        ),
        "extractor_conv_bias": config.conv_bias,
        "encoder_embed_dim": config.embed_dim,
        "encoder_projection_dropout": config.dropout_input,
        "encoder_pos_conv_kernel": config.pos_conv_kernel,
        "encoder_pos_conv_groups": config.pos_conv_groups,
        "encoder_num_layers": config.num_layers,
        "encoder_num_heads": config.num_heads,
        "encoder_num_buckets": config.num_buckets,
        "encoder_max_distance": config.max_distance,
        "encoder_attention_dropout": config.attention_dropout,
        "encoder_ff_interm_features": config.ffn_dim,
        "encoder_ff_interm_dropout": config.activation_dropout,
        "encoder_dropout": config.dropout,
        "encoder_layer_norm_first": config.layer_norm_first,
        "encoder_layer_drop": config.layer_drop,
    }


def to_torchaudio(encoder: WavLMEncoder):
    """Our WavLM encoder -> torchaudio ``wavlm_model`` with the same weights."""
    if not isinstance(encoder, WavLMEncoder):
        raise TypeError(f"to_torchaudio needs a WavLM encoder, got {type(encoder).__name__}")
    encoder.require_conv_front_end("torchaudio")
    if not encoder.config.gated_position_bias:
        raise ValueError("torchaudio's WavLM always gates the position bias")
    model = torchaudio.models.wavlm_model(**torchaudio_arguments(encoder.config), aux_num_out=None)
    state = _torchaudio_from_ours(encoder.state_dict(), encoder.config.num_layers)
    model.load_state_dict(
        {key: value.detach().clone() for key, value in state.items()}, strict=True
    )
    return model.train(encoder.training)


def encoder_from_torchaudio_state(
    payload, preset: str | dict | None = None, source: str = "state dict"
) -> WavLMEncoder:
    """A torchaudio WavLM state dict (loaded) -> our encoder (eval mode).

    ``preset`` is ``wavlm_base``, ``wavlm_large`` or a dict of ``wavlm_model`` keyword
    arguments; a payload ``{"state_dict", "preset"}`` names its own. Without one, the
    preset whose shapes fit is used.
    """
    if isinstance(payload, dict) and "state_dict" in payload:
        preset = payload.get("preset", preset)
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, Tensor) for v in payload.values()):
        raise ValueError(f"{source}: not a torchaudio state dict (expected a dict of tensors)")
    state = legacy_weight_norm_keys(payload)
    state = {key: value for key, value in state.items() if not TORCHAUDIO_ONLY.fullmatch(key)}
    candidates = [preset] if preset is not None else list(TORCHAUDIO_PRESETS)
    problems = []
    for candidate in candidates:
        if isinstance(candidate, dict):
            check_preset_arguments(torchaudio.models.wavlm_model, candidate, source)
            builder = functools.partial(
                torchaudio.models.wavlm_model, **{"aux_num_out": None, **candidate}
            )
        elif candidate in TORCHAUDIO_PRESETS:
            builder = getattr(torchaudio.models, candidate)
        else:
            raise ValueError(
                f"unknown torchaudio WavLM preset {candidate!r}; expected one of "
                f"{TORCHAUDIO_PRESETS} or a dict of wavlm_model arguments"
            )
        with torch.device("meta"):  # shapes only
            expected = builder().state_dict()
        mismatch = shape_mismatches(expected, state, shown=1)
        if not mismatch:
            model = builder()
            model.load_state_dict(state, strict=False)
            return from_torchaudio(model.eval()).eval()
        problems.append(
            f"{candidate if isinstance(candidate, str) else 'given preset'}: {mismatch}"
        )
    raise ValueError(
        f"{source}: the WavLM weights fit no torchaudio preset ({problems[0]}); save them as "
        "{'state_dict': model.state_dict(), 'preset': {<wavlm_model keyword arguments>}}"
    )


# ---------------------------------------------------------------------------------------
# Hugging Face transformers (local folders only)


def _huggingface_key(our_key: str) -> str:
    if our_key == "mask_embedding":
        return "masked_spec_embed"
    if our_key == _OUR_EMBEDDING:
        return _THEIR_EMBEDDING["huggingface"]
    match = _OUR_ATTENTION.fullmatch(our_key)
    if match is None:
        return torchaudio_to_huggingface_key(speechssl_to_torchaudio_key(our_key))
    layer, kind, tensor = match.groups()
    name = _GATE_NAMES[kind][0] if kind in _GATE_NAMES else kind
    return f"encoder.layers.{layer}.attention.{name}" + (f".{tensor}" if tensor else "")


def config_from_huggingface(hf_config) -> WavLMConfig:
    """A ``transformers.WavLMConfig`` -> ``WavLMConfig``."""
    if hf_config.feat_extract_activation != "gelu" or hf_config.hidden_act != "gelu":
        raise ValueError("only GELU activations convert (as in every released WavLM)")
    return WavLMConfig(
        conv_channels=list(hf_config.conv_dim),
        conv_kernels=list(hf_config.conv_kernel),
        conv_strides=list(hf_config.conv_stride),
        conv_bias=hf_config.conv_bias,
        extractor_mode=f"{hf_config.feat_extract_norm}_norm",
        masked_group_norm=False,
        embed_dim=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads,
        ffn_dim=hf_config.intermediate_size,
        pos_conv_kernel=hf_config.num_conv_pos_embeddings,
        pos_conv_groups=hf_config.num_conv_pos_embedding_groups,
        layer_norm_first=hf_config.do_stable_layer_norm,
        dropout_input=hf_config.feat_proj_dropout,
        dropout=hf_config.hidden_dropout,
        attention_dropout=hf_config.attention_dropout,
        activation_dropout=hf_config.activation_dropout,
        layer_drop=hf_config.layerdrop,
        layer_norm_eps=hf_config.layer_norm_eps,
        num_buckets=hf_config.num_buckets,
        max_distance=hf_config.max_bucket_distance,
    )


def from_huggingface_model(model, padding_invariant: bool = False) -> WavLMEncoder:
    """A ``transformers.WavLMModel`` object -> our encoder, same weights."""
    if getattr(model, "adapter", None) is not None:
        raise ValueError("WavLM models with an adapter do not convert")
    config = config_from_huggingface(model.config)
    if padding_invariant:
        config = dataclasses.replace(config, masked_group_norm=True)
    encoder = WavLMEncoder(config)
    theirs = legacy_weight_norm_keys(model.state_dict())
    theirs = {
        key.replace(
            "encoder.pos_conv_embed.conv.weight_g",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        ).replace(
            "encoder.pos_conv_embed.conv.weight_v",
            "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
        ): value
        for key, value in theirs.items()
    }
    state = {}
    for key in encoder.state_dict():
        their_key = _huggingface_key(key)
        if their_key not in theirs:
            raise ValueError(f"the Hugging Face WavLM model has no {their_key}")
        state[key] = theirs[their_key].detach().clone()
    load_exact(encoder, state, source="Hugging Face WavLM model")
    return encoder.train(model.training)


def from_huggingface(directory: str | os.PathLike, padding_invariant: bool = False) -> WavLMEncoder:
    """A local ``transformers`` ``WavLMModel`` folder (``config.json`` + weights) -> our
    encoder in eval mode; nothing is downloaded."""
    model = load_local_transformers_model(directory)
    if type(model).__name__ != "WavLMModel":
        raise ValueError(f"{directory}: a {type(model).__name__}, not a WavLMModel")
    return from_huggingface_model(model.eval(), padding_invariant).eval()


def to_huggingface(encoder: WavLMEncoder, out_dir: str | os.PathLike) -> Path:
    """Write our WavLM encoder as a ``transformers`` ``WavLMModel`` folder with equal outputs
    (SpecAugment off in the written config, so only dropout makes training mode differ)."""
    # transformers is optional (dev extras): imported only when a folder is written
    import transformers

    if not isinstance(encoder, WavLMEncoder):
        raise TypeError(f"to_huggingface needs a WavLM encoder, got {type(encoder).__name__}")
    encoder.require_conv_front_end("Hugging Face")
    config = encoder.config
    hf_config = transformers.WavLMConfig(
        **huggingface_config_arguments(config),
        num_buckets=config.num_buckets,
        max_bucket_distance=config.max_distance,
    )
    model = transformers.WavLMModel(hf_config)
    state = {
        _huggingface_key(key): value.detach().clone() for key, value in encoder.state_dict().items()
    }
    # layers after the first hold no position embedding in either model
    model.load_state_dict(state, strict=True)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    return out_dir


# ---------------------------------------------------------------------------------------
# unilm / fairseq checkpoints (WavLM-Base.pt, WavLM-Base+.pt, WavLM-Large.pt)

_UNILM_KEY_MAP = [
    (r"encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight", _OUR_EMBEDDING),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)",
        "transformer.layers.{}.attention.gate_projection.{}",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", "transformer.layers.{}.attention.gate_scale"),
]


def unilm_to_speechssl_key(key: str) -> str | None:
    """Our name for a unilm WavLM parameter (None: not part of the encoder)."""
    for pattern, template in _UNILM_KEY_MAP:
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(*match.groups())
    return fairseq_to_speechssl_key(key)


def config_from_unilm(model_config) -> WavLMConfig:
    """A unilm ``cfg`` dict (or fairseq ``cfg.model``) of WavLM -> ``WavLMConfig``."""
    read = lambda name, default: config_value(model_config, name, default)
    if not read("relative_position_embedding", True):
        raise ValueError("a WavLM checkpoint without relative position embedding")
    return WavLMConfig(
        **fairseq_config_fields(model_config),
        num_buckets=int(read("num_buckets", 320)),
        max_distance=int(read("max_distance", 800)),
        gated_position_bias=bool(read("gru_rel_pos", True)),
    )


def encoder_from_unilm(
    payload, padding_invariant: bool = False, source: str = "WavLM checkpoint"
) -> WavLMEncoder:
    """An unpickled unilm/fairseq WavLM checkpoint -> our encoder in eval mode."""
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("cfg"), dict)
        and "model" not in payload["cfg"]
    ):
        # unilm's files: cfg holds the model fields directly
        state, model_config = payload["model"], payload["cfg"]
    else:
        state, model_config = fairseq_model_state(payload, source)
    config = config_from_unilm(model_config)
    if padding_invariant:
        config = dataclasses.replace(config, masked_group_norm=True)
    encoder = WavLMEncoder(config)
    converted = {}
    for key, value in state.items():
        ours = unilm_to_speechssl_key(key)
        if ours is not None:
            converted[ours] = value
    load_exact(encoder, converted, source=source)
    return encoder.eval()


def load_unilm_checkpoint(path: str | os.PathLike, padding_invariant: bool = False) -> WavLMEncoder:
    """A unilm WavLM file (e.g. ``WavLM-Base+.pt``) -> our encoder, read weights-only."""
    return encoder_from_unilm(read_checkpoint(path), padding_invariant, source=str(path))


def to_unilm_checkpoint(encoder: WavLMEncoder) -> dict:
    """Our WavLM encoder as a unilm checkpoint payload ``{"cfg": {...}, "model": {...}}``
    (what ``torch.save`` writes as ``WavLM-Base+.pt``; unilm's ``WavLM`` loads it)."""
    if not isinstance(encoder, WavLMEncoder):
        raise TypeError(f"to_unilm_checkpoint needs a WavLM encoder, got {type(encoder).__name__}")
    encoder.require_conv_front_end("unilm")
    config = encoder.config
    layer_norm_extractor = config.extractor_mode == "layer_norm"
    state = {}
    for key, value in encoder.state_dict().items():
        match = _OUR_ATTENTION.fullmatch(key)
        if key == _OUR_EMBEDDING:
            their_key = _THEIR_EMBEDDING["unilm"]
        elif match and match.group(2) in _GATE_NAMES:
            layer, kind, tensor = match.groups()
            suffix = f".{tensor}" if tensor else ""
            their_key = f"encoder.layers.{layer}.self_attn.{_GATE_NAMES[kind][1]}{suffix}"
        else:
            their_key = speechssl_to_fairseq_key(key, layer_norm_extractor)
        state[their_key] = value.detach().clone()
    layers = " + ".join(
        f"[({channels}, {kernel}, {stride})]"
        for channels, kernel, stride in zip(
            config.conv_channels, config.conv_kernels, config.conv_strides
        )
    )
    cfg = {
        "extractor_mode": "layer_norm" if layer_norm_extractor else "default",
        "encoder_layers": config.num_layers,
        "encoder_embed_dim": config.embed_dim,
        "encoder_ffn_embed_dim": config.ffn_dim,
        "encoder_attention_heads": config.num_heads,
        "activation_fn": "gelu",
        "layer_norm_first": config.layer_norm_first,
        "conv_feature_layers": layers,
        "conv_bias": config.conv_bias,
        "feature_grad_mult": config.feature_grad_mult,
        "dropout": config.dropout,
        "attention_dropout": config.attention_dropout,
        "activation_dropout": config.activation_dropout,
        "encoder_layerdrop": config.layer_drop,
        "dropout_input": config.dropout_input,
        "conv_pos": config.pos_conv_kernel,
        "conv_pos_groups": config.pos_conv_groups,
        "relative_position_embedding": True,
        "num_buckets": config.num_buckets,
        "max_distance": config.max_distance,
        "gru_rel_pos": config.gated_position_bias,
    }
    return {"cfg": cfg, "model": state}
