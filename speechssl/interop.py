"""Weight-exact conversion between speechssl's wav2vec 2.0 / HuBERT encoder and peers.

- torchaudio: :func:`from_torchaudio` / :func:`to_torchaudio` (``Wav2Vec2Model``),
  :func:`load_torchaudio_checkpoint` (a saved ``state_dict``; its preset is recognised from
  the parameter shapes or named in the file);
- fairseq: :func:`load_fairseq_checkpoint` reads a HuBERT / wav2vec 2.0 ``.pt`` file a
  user downloaded (no fairseq install needed, nothing is downloaded);
- Hugging Face: :func:`from_huggingface` (a local ``transformers`` model directory) and
  :func:`to_huggingface` (writes a ``HubertModel`` or ``UniSpeechSatModel`` directory).

Three lines take a public HuBERT into a project::

    from speechssl.interop import load_fairseq_checkpoint
    encoder = load_fairseq_checkpoint("hubert_base_ls960.pt")   # a local file
    out = encoder(wav, lengths)                                 # EncoderOutput

A converted encoder keeps torchaudio's padding behaviour (``masked_group_norm=False``,
group-norm statistics include the padded tail) so outputs match the reference on the same
padded batch; pass ``padding_invariant=True`` for statistics over valid samples only.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import torch
from torch import Tensor

from .encoders.wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder
from .safe_io import UnsafeFileError, check_state_fits, load_torch_file, short_reason

# ---------------------------------------------------------------------------------------
# torchaudio <-> speechssl key map: (torchaudio regex, speechssl template). One row per
# parameter kind; group 1 is a layer index where there is one.
TORCHAUDIO_KEY_MAP: list[tuple[str, str]] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", "feature_extractor.blocks.{}.weight"),
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.bias", "feature_extractor.blocks.{}.bias"),
    (
        r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)",
        "feature_extractor.blocks.{}.norm.{}",
    ),
    (
        r"encoder\.feature_projection\.(layer_norm|projection)\.(weight|bias)",
        "feature_projection.{}.{}",
    ),
    (
        r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original0",
        "positional_embedding.weight_g",
    ),
    (
        r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original1",
        "positional_embedding.weight_v",
    ),
    (r"encoder\.transformer\.pos_conv_embed\.conv\.bias", "positional_embedding.bias"),
    (r"encoder\.transformer\.layer_norm\.(weight|bias)", "layer_norm.{}"),
    (
        r"encoder\.transformer\.layers\.(\d+)\.attention\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
        "transformer.layers.{}.attention.{}.{}",
    ),
    (
        r"encoder\.transformer\.layers\.(\d+)\.(layer_norm|final_layer_norm)\.(weight|bias)",
        "transformer.layers.{}.{}.{}",
    ),
    (
        r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.(intermediate_dense|output_dense)\.(weight|bias)",
        "transformer.layers.{}.feed_forward.{}.{}",
    ),
]

# keys that exist on one side only: torchaudio's fine-tuning head, our mask embedding
TORCHAUDIO_ONLY = re.compile(r"aux\.(weight|bias)")
SPEECHSSL_ONLY = {"mask_embedding"}


def _invert_template(template: str) -> str:
    return "^" + re.escape(template).replace(r"\{\}", r"([A-Za-z_0-9]+)") + "$"


def _torchaudio_template(pattern: str) -> str:
    """Regex with groups -> format template, e.g. ``a\\.(\\d+)\\.b`` -> ``a.{}.b``."""
    template = re.sub(r"\([^)]*\)", "{}", pattern)
    return template.replace("\\.", ".")


def torchaudio_to_speechssl_key(key: str) -> str | None:
    """Our parameter name for a torchaudio ``Wav2Vec2Model`` one (None: no counterpart)."""
    for pattern, template in TORCHAUDIO_KEY_MAP:
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(*match.groups())
    if TORCHAUDIO_ONLY.fullmatch(key):
        return None
    raise ValueError(f"unexpected torchaudio wav2vec2 key: {key}")


def speechssl_to_torchaudio_key(key: str) -> str | None:
    """torchaudio's parameter name for one of ours (None: no counterpart)."""
    if key in SPEECHSSL_ONLY:
        return None
    for pattern, template in TORCHAUDIO_KEY_MAP:
        match = re.fullmatch(_invert_template(template), key)
        if match:
            return _torchaudio_template(pattern).format(*match.groups())
    raise ValueError(f"unexpected speechssl wav2vec2 key: {key}")


def _legacy_weight_norm_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Older torchaudio/fairseq files name the weight-norm pair ``weight_g``/``weight_v``."""
    renamed = {}
    for key, value in state_dict.items():
        key = key.replace(
            "pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0"
        )
        key = key.replace(
            "pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1"
        )
        renamed[key] = value
    return renamed


def config_from_torchaudio(model) -> Wav2Vec2Config:
    """Read the architecture of a torchaudio ``Wav2Vec2Model`` into a ``Wav2Vec2Config``."""
    conv_layers = model.feature_extractor.conv_layers
    first_norm = conv_layers[0].layer_norm
    extractor_mode = "group_norm" if isinstance(first_norm, torch.nn.GroupNorm) else "layer_norm"
    transformer = model.encoder.transformer
    first_layer = transformer.layers[0]
    pos_conv = transformer.pos_conv_embed
    if type(first_layer.attention).__name__ != "SelfAttention":
        raise ValueError("only wav2vec 2.0 / HuBERT models convert (WavLM attention does not)")
    return Wav2Vec2Config(
        conv_channels=[layer.conv.out_channels for layer in conv_layers],
        conv_kernels=[layer.conv.kernel_size[0] for layer in conv_layers],
        conv_strides=[layer.conv.stride[0] for layer in conv_layers],
        conv_bias=conv_layers[0].conv.bias is not None,
        extractor_mode=extractor_mode,
        masked_group_norm=False,
        embed_dim=pos_conv.embed_dim,
        num_layers=len(transformer.layers),
        num_heads=first_layer.attention.num_heads,
        ffn_dim=first_layer.feed_forward.intermediate_dense.out_features,
        pos_conv_kernel=pos_conv.kernel_size,
        pos_conv_groups=pos_conv.conv.groups,
        # torchaudio's Transformer holds the inverse flag (see its _get_encoder)
        layer_norm_first=first_layer.layer_norm_first,
        dropout_input=model.encoder.feature_projection.dropout.p,
        dropout=first_layer.dropout.p,
        attention_dropout=first_layer.attention.dropout,
        activation_dropout=first_layer.feed_forward.intermediate_dropout.p,
        layer_drop=transformer.layer_drop,
    )


def from_torchaudio(model, padding_invariant: bool = False) -> Wav2Vec2Encoder:
    """torchaudio ``Wav2Vec2Model`` (e.g. ``hubert_base()``) -> our encoder, same weights.

    Example:
        >>> import torchaudio
        >>> reference = torchaudio.models.hubert_base()
        >>> encoder = from_torchaudio(reference)
        >>> encoder.num_layers, encoder.output_dim
        (12, 768)
    """
    config = config_from_torchaudio(model)
    if padding_invariant:
        config = dataclasses.replace(config, masked_group_norm=True)
    encoder = Wav2Vec2Encoder(config)
    state = {}
    for key, value in _legacy_weight_norm_keys(model.state_dict()).items():
        ours = torchaudio_to_speechssl_key(key)
        if ours is not None:
            state[ours] = value.detach().clone()
    _load_exact(encoder, state, source="torchaudio model")
    return encoder.train(model.training)


def to_torchaudio(encoder: Wav2Vec2Encoder):
    """Our wav2vec2-family encoder -> torchaudio ``Wav2Vec2Model`` with the same weights."""
    from torchaudio.models import wav2vec2_model

    if not isinstance(encoder, Wav2Vec2Encoder):
        raise TypeError(
            f"to_torchaudio needs a wav2vec2-family encoder, got {type(encoder).__name__}"
        )
    config = encoder.config
    model = wav2vec2_model(
        extractor_mode=config.extractor_mode,
        extractor_conv_layer_config=list(
            zip(config.conv_channels, config.conv_kernels, config.conv_strides)
        ),
        extractor_conv_bias=config.conv_bias,
        encoder_embed_dim=config.embed_dim,
        encoder_projection_dropout=config.dropout_input,
        encoder_pos_conv_kernel=config.pos_conv_kernel,
        encoder_pos_conv_groups=config.pos_conv_groups,
        encoder_num_layers=config.num_layers,
        encoder_num_heads=config.num_heads,
        encoder_attention_dropout=config.attention_dropout,
        encoder_ff_interm_features=config.ffn_dim,
        encoder_ff_interm_dropout=config.activation_dropout,
        encoder_dropout=config.dropout,
        encoder_layer_norm_first=config.layer_norm_first,
        encoder_layer_drop=config.layer_drop,
        aux_num_out=None,
    )
    state = {}
    for key, value in encoder.state_dict().items():
        theirs = speechssl_to_torchaudio_key(key)
        if theirs is not None:
            state[theirs] = value.detach().clone()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"torchaudio conversion left missing={missing} unexpected={unexpected}")
    return model.train(encoder.training)


def _load_exact(encoder: Wav2Vec2Encoder, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``encoder``; only ``mask_embedding`` may be absent."""
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(state) - SPEECHSSL_ONLY)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit the encoder: missing {missing}, unexpected {unexpected}"
        )
    shapes = encoder.state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(shapes[key].shape):
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(shapes[key].shape)}"
            )
    encoder.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------------------------
# torchaudio checkpoint files


TORCHAUDIO_PRESETS = (
    "hubert_base",
    "hubert_large",
    "hubert_xlarge",
    "wav2vec2_base",
    "wav2vec2_large",
    "wav2vec2_large_lv60k",
)

# encoder_embed_dim of each preset (torchaudio.models), to try only the presets that can fit
_TORCHAUDIO_PRESET_WIDTHS = {
    "hubert_base": 768,
    "hubert_large": 1024,
    "hubert_xlarge": 1280,
    "wav2vec2_base": 768,
    "wav2vec2_large": 1024,
    "wav2vec2_large_lv60k": 1024,
}


def load_torchaudio_checkpoint(
    path: str | os.PathLike, preset: str | dict | None = None
) -> Wav2Vec2Encoder:
    """A ``torch.save``-d torchaudio ``Wav2Vec2Model.state_dict()`` -> our encoder (eval mode).

    ``preset`` names the torchaudio builder the weights belong to (``hubert_base``,
    ``hubert_large``, ``wav2vec2_base``, ...) or is a dict of keyword arguments for
    ``torchaudio.models.wav2vec2_model``. The file may also be a dict
    ``{"state_dict": ..., "preset": ...}`` (how to ship a non-standard architecture). With
    neither, the preset whose parameter shapes match the state dict is used (``hubert_base``
    and ``wav2vec2_base`` share one architecture and differ only in dropout rates).

    Raises:
        ValueError: an unreadable file, or weights that fit no preset (the message says how
            to name the architecture).
    """
    import torchaudio

    payload = _torch_load(path)
    if isinstance(payload, dict) and "state_dict" in payload:
        preset = payload.get("preset", preset)
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(
        isinstance(value, Tensor) for value in payload.values()
    ):
        raise ValueError(f"{path}: not a torchaudio state dict (expected a dict of tensors)")
    state = _legacy_weight_norm_keys(payload)
    state = {key: value for key, value in state.items() if not TORCHAUDIO_ONLY.fullmatch(key)}
    if preset is None:
        preset = match_torchaudio_preset(state)
        if preset is None:
            raise ValueError(
                f"{path}: the weights fit none of torchaudio's presets {TORCHAUDIO_PRESETS}; "
                "save them as {'state_dict': model.state_dict(), 'preset': {<the "
                "torchaudio.models.wav2vec2_model keyword arguments>}}"
            )
    if isinstance(preset, dict):
        model = torchaudio.models.wav2vec2_model(**{"aux_num_out": None, **preset})
    elif preset in TORCHAUDIO_PRESETS:
        model = getattr(torchaudio.models, preset)()
    else:
        raise ValueError(
            f"unknown torchaudio preset {preset!r}; expected one of {TORCHAUDIO_PRESETS} or a dict"
        )
    mismatches = _shape_mismatches(model.state_dict(), state)
    if mismatches:
        # checked here: load_state_dict would raise a many-line RuntimeError on a shape
        raise ValueError(f"{path}: not a torchaudio {preset} state dict ({mismatches})")
    model.load_state_dict(state, strict=False)
    return from_torchaudio(model.eval()).eval()


def _shape_mismatches(expected: dict[str, Tensor], state: dict[str, Tensor]) -> str:
    """A short description of how ``state`` differs from ``expected`` ('' when it fits)."""
    missing = sorted(
        key for key in expected if key not in state and not TORCHAUDIO_ONLY.fullmatch(key)
    )
    unexpected = sorted(key for key in state if key not in expected)
    reshaped = sorted(
        key for key in state if key in expected and state[key].shape != expected[key].shape
    )
    problems = [
        f"{name} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", reshaped))
        if keys
    ]
    return "; ".join(problems)


def match_torchaudio_preset(state: dict[str, Tensor]) -> str | None:
    """The first of :data:`TORCHAUDIO_PRESETS` whose parameter names and shapes equal those
    of ``state`` (a torchaudio ``Wav2Vec2Model`` state dict), or ``None``.

    Example:
        >>> import torchaudio
        >>> with torch.device("meta"):
        ...     state = torchaudio.models.hubert_large().state_dict()
        >>> match_torchaudio_preset(state)
        'hubert_large'
    """
    import torchaudio

    state = _legacy_weight_norm_keys(state)
    state = {key: value for key, value in state.items() if not TORCHAUDIO_ONLY.fullmatch(key)}
    projection = state.get("encoder.feature_projection.projection.weight")
    width = None if projection is None else projection.shape[0]
    for name in TORCHAUDIO_PRESETS:
        if width != _TORCHAUDIO_PRESET_WIDTHS[name]:
            continue  # building a preset takes ~0.5 s even on the meta device: skip misfits
        # on the meta device: shapes only, no memory for the weights of the large presets
        with torch.device("meta"):
            expected = getattr(torchaudio.models, name)().state_dict()
        if not _shape_mismatches(expected, state):
            return name
    return None


def _torch_load(path: str | os.PathLike):
    return load_torch_file(path, "torch checkpoint")


# ---------------------------------------------------------------------------------------
# fairseq checkpoint files (no fairseq install needed)

# (fairseq regex, speechssl template); torchaudio's ``import_fairseq._map_key`` is the
# reference this table is tested against
FAIRSEQ_KEY_MAP: list[tuple[str, str]] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", "feature_extractor.blocks.{}.{}"),
    (
        r"feature_extractor\.conv_layers\.(0)\.2\.(weight|bias)",
        "feature_extractor.blocks.{}.norm.{}",
    ),
    (
        r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)",
        "feature_extractor.blocks.{}.norm.{}",
    ),
    (r"layer_norm\.(weight|bias)", "feature_projection.layer_norm.{}"),
    (r"post_extract_proj\.(weight|bias)", "feature_projection.projection.{}"),
    (r"mask_emb", "mask_embedding"),
    (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", "positional_embedding.{}"),
    (r"encoder\.layer_norm\.(weight|bias)", "layer_norm.{}"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
        "transformer.layers.{}.attention.{}.{}",
    ),
    (
        r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)",
        "transformer.layers.{}.layer_norm.{}",
    ),
    (
        r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)",
        "transformer.layers.{}.feed_forward.intermediate_dense.{}",
    ),
    (
        r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)",
        "transformer.layers.{}.feed_forward.output_dense.{}",
    ),
    (
        r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)",
        "transformer.layers.{}.final_layer_norm.{}",
    ),
]
# pre-training heads and fine-tuning projections that are not part of the encoder
FAIRSEQ_IGNORED = re.compile(
    r"(quantizer|project_q|final_proj|label_embs_concat|target_glu|proj)\b.*"
)

# classes a fairseq checkpoint pickles besides tensors; everything else is refused
_SAFE_BUILTINS = {
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "int",
    "float",
    "bool",
    "bytes",
    "object",
    "NoneType",
}


def fairseq_to_speechssl_key(key: str) -> str | None:
    """Our parameter name for a fairseq wav2vec 2.0 / HuBERT one (None: not encoder)."""
    for pattern, template in FAIRSEQ_KEY_MAP:
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(*match.groups())
    if FAIRSEQ_IGNORED.fullmatch(key):
        return None
    raise ValueError(f"unexpected fairseq wav2vec2/HuBERT key: {key}")


def _stub_class(qualified_name: str) -> type:
    """An inert stand-in for a fairseq class (e.g. an enum in ``cfg``): it stores whatever
    the pickle gives it and runs no code from the checkpoint."""
    module, _, name = qualified_name.rpartition(".")

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    stub = type(
        name, (), {"__init__": __init__, "__setstate__": __setstate__, "__module__": module}
    )
    stub.__qualname__ = name
    return stub


def _allowed_global(qualified_name: str):
    """The object to allow for a global a fairseq checkpoint names, or None to refuse."""
    import argparse
    import collections
    import importlib
    import typing

    module, _, name = qualified_name.rpartition(".")
    module = module or "builtins"  # torch names builtins without their module
    if qualified_name == "argparse.Namespace":
        return argparse.Namespace
    if module == "collections" and name in ("OrderedDict", "defaultdict"):
        return getattr(collections, name)
    if module == "typing" and name in ("Any", "Optional", "Union", "List", "Dict", "Tuple"):
        return getattr(typing, name)
    if module == "builtins" and name in _SAFE_BUILTINS:
        import builtins

        return type(None) if name == "NoneType" else getattr(builtins, name)
    if module.split(".")[0] == "omegaconf":
        # omegaconf's containers and nodes only hold config values
        candidate = getattr(importlib.import_module(module), name, None)
        return candidate if isinstance(candidate, type) else None
    if module.split(".")[0] == "fairseq":
        return _stub_class(qualified_name)
    return None


def read_fairseq_checkpoint(path: str | os.PathLike) -> dict:
    """Unpickle a fairseq ``.pt`` file without fairseq and without running its code.

    ``torch.load(weights_only=True)`` is tried first. fairseq files also pickle their
    config (an ``argparse.Namespace`` in ``args`` or omegaconf nodes in ``cfg``), which
    that loader refuses; those classes (and inert stubs for fairseq's own enums) are then
    allow-listed one by one with ``torch.serialization.safe_globals``, still under the
    weights-only unpickler, so a global outside that short list is refused, never run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    allowed: list = []
    for _ in range(64):
        try:
            payload = load_torch_file(path, "fairseq checkpoint", allowed_globals=allowed)
            break
        except UnsafeFileError as error:
            allowed_object = _allowed_global(error.global_name)
            if allowed_object is None:
                raise ValueError(
                    f"{path}: refusing to unpickle {error.global_name}; a fairseq checkpoint "
                    "does not need it"
                ) from None
            allowed.append(allowed_object)
    else:
        raise ValueError(f"{path}: too many unknown classes in the checkpoint")
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{path}: not a fairseq checkpoint (expected a dict with 'model')")
    return payload


def _config_value(container, name: str, default=None):
    """Read a field from a dict, omegaconf node or argparse Namespace."""
    if container is None:
        return default
    if isinstance(container, dict):
        return container.get(name, default)
    try:
        return container[name]
    except Exception:  # noqa: BLE001 - Namespace and friends
        return getattr(container, name, default)


def _parse_conv_layers(expression: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    Evaluated over a tiny grammar (lists, tuples, ints, ``+``, ``*``), never with ``eval``.
    """
    import ast

    def evaluate(node):
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            values = [evaluate(element) for element in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported conv_feature_layers expression: {expression!r}")

    layers = evaluate(ast.parse(expression, mode="eval"))
    return [tuple(int(value) for value in layer) for layer in layers]


def config_from_fairseq(model_config) -> Wav2Vec2Config:
    """A fairseq ``cfg.model`` (or old ``args``) of wav2vec 2.0 / HuBERT -> ``Wav2Vec2Config``."""
    read = lambda name, default: _config_value(model_config, name, default)
    layers = _parse_conv_layers(
        read("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    )
    extractor_mode = read("extractor_mode", "default")
    return Wav2Vec2Config(
        conv_channels=[layer[0] for layer in layers],
        conv_kernels=[layer[1] for layer in layers],
        conv_strides=[layer[2] for layer in layers],
        conv_bias=bool(read("conv_bias", False)),
        extractor_mode="layer_norm" if extractor_mode == "layer_norm" else "group_norm",
        masked_group_norm=False,
        feature_grad_mult=float(read("feature_grad_mult", 0.1)),
        embed_dim=int(read("encoder_embed_dim", 768)),
        num_layers=int(read("encoder_layers", 12)),
        num_heads=int(read("encoder_attention_heads", 12)),
        ffn_dim=int(read("encoder_ffn_embed_dim", 3072)),
        pos_conv_kernel=int(read("conv_pos", 128)),
        pos_conv_groups=int(read("conv_pos_groups", 16)),
        layer_norm_first=bool(read("layer_norm_first", False)),
        dropout_input=float(read("dropout_input", 0.0)),
        dropout=float(read("dropout", 0.1)),
        attention_dropout=float(read("attention_dropout", 0.1)),
        activation_dropout=float(read("activation_dropout", 0.0)),
        layer_drop=float(read("encoder_layerdrop", 0.0)),
    )


def load_fairseq_checkpoint(
    path: str | os.PathLike, padding_invariant: bool = False
) -> Wav2Vec2Encoder:
    """A fairseq HuBERT / wav2vec 2.0 checkpoint file (e.g. ``hubert_base_ls960.pt``) -> our
    encoder in eval mode, ready for the downstream recipes. Fine-tuned (``w2v_encoder``)
    checkpoints load their encoder part."""
    payload = read_fairseq_checkpoint(path)
    state = payload["model"]
    cfg = payload.get("cfg")
    model_config = _config_value(cfg, "model") if cfg is not None else payload.get("args")
    if model_config is None:
        raise ValueError(f"{path}: the checkpoint has neither 'cfg' nor 'args'")
    prefix = "w2v_encoder.w2v_model."
    if any(key.startswith(prefix) for key in state):
        # a fine-tuned checkpoint: the pre-trained model's config is nested in w2v_args
        nested = _config_value(model_config, "w2v_args")
        model_config = (
            _config_value(nested, "model", nested) if nested is not None else model_config
        )
        state = {
            key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)
        }
    config = config_from_fairseq(model_config)
    if padding_invariant:
        config = dataclasses.replace(config, masked_group_norm=True)
    encoder = Wav2Vec2Encoder(config)
    converted = {}
    for key, value in state.items():
        ours = fairseq_to_speechssl_key(key)
        if ours is not None:
            converted[ours] = value
    _load_exact(encoder, converted, source=str(path))
    return encoder.eval()


# ---------------------------------------------------------------------------------------
# Hugging Face transformers (local directories only; nothing is downloaded)


def _torchaudio_to_huggingface_key(key: str) -> str:
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
    from torchaudio.models.wav2vec2.utils import import_huggingface_model
    from transformers import AutoConfig, AutoModel

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"no transformers model directory at {directory} (config.json missing)"
        )
    original = _load_local_transformers_model(directory, AutoConfig, AutoModel).eval()
    encoder = from_torchaudio(
        import_huggingface_model(original), padding_invariant=padding_invariant
    )
    mask_embedding = getattr(original, "masked_spec_embed", None)
    if mask_embedding is not None:
        encoder.mask_embedding.data.copy_(mask_embedding.detach())
    return encoder.eval()


def _load_local_transformers_model(directory: Path, auto_config, auto_model):
    """Build a ``transformers`` model from a local folder without any hub call.

    Weights saved from a task model (e.g. ``HubertForCTC``) carry the base model's prefix
    (``hubert.``); it is stripped so the base model loads them.
    """
    import json

    config_path = directory / "config.json"
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path}: not valid JSON ({short_reason(error)})") from None
    model_type = values.pop("model_type", None) if isinstance(values, dict) else None
    if not isinstance(model_type, str):
        raise ValueError(f"{config_path} has no model_type")  # noqa: TRY004 - bad data, not a bad call
    # transformers validates its configs with huggingface_hub's strict dataclasses (a
    # dependency of transformers, so present wherever this function can run)
    from huggingface_hub.errors import StrictDataclassError

    try:
        model = auto_model.from_config(auto_config.for_model(model_type, **values))
    except (TypeError, ValueError, KeyError, AttributeError, StrictDataclassError) as error:
        # transformers builds the model from the user's config.json: missing keys or values
        # of the wrong type surface as any of these, from deep inside the model's __init__
        raise ValueError(
            f"{config_path}: not a usable {model_type} config ({short_reason(error)})"
        ) from None
    if (directory / "model.safetensors").is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(directory / "model.safetensors"))
        except SafetensorError as error:
            raise ValueError(
                f"{directory / 'model.safetensors'}: truncated or corrupt safetensors file "
                f"({short_reason(error)})"
            ) from None
    elif (directory / "pytorch_model.bin").is_file():
        state = load_torch_file(directory / "pytorch_model.bin", "Hugging Face weights file")
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


def to_huggingface(
    encoder: Wav2Vec2Encoder, out_dir: str | os.PathLike, model_type: str = "hubert"
) -> Path:
    """Write our wav2vec2-family encoder as a ``transformers`` directory that
    ``transformers``' ``HubertModel`` (``model_type="hubert"``) or ``UniSpeechSatModel``
    (``"unispeech-sat"``) loads from the folder with equal
    outputs. SpecAugment is switched off in the written config so training-mode outputs
    differ only by dropout; set ``apply_spec_augment`` there to fine-tune the HF way.
    """
    import transformers

    if not isinstance(encoder, Wav2Vec2Encoder):
        raise TypeError(
            f"to_huggingface needs a wav2vec2-family encoder, got {type(encoder).__name__}"
        )
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
        hidden_size=config.embed_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.ffn_dim,
        hidden_act="gelu",
        hidden_dropout=config.dropout,
        activation_dropout=config.activation_dropout,
        attention_dropout=config.attention_dropout,
        feat_proj_dropout=config.dropout_input,
        layerdrop=config.layer_drop,
        layer_norm_eps=config.layer_norm_eps,
        feat_extract_norm="group" if config.extractor_mode == "group_norm" else "layer",
        feat_extract_activation="gelu",
        conv_dim=list(config.conv_channels),
        conv_stride=list(config.conv_strides),
        conv_kernel=list(config.conv_kernels),
        conv_bias=config.conv_bias,
        num_conv_pos_embeddings=config.pos_conv_kernel,
        num_conv_pos_embedding_groups=config.pos_conv_groups,
        do_stable_layer_norm=config.layer_norm_first,
        apply_spec_augment=False,
        **extra,
    )
    model = model_class(hf_config)
    state = {}
    for key, value in encoder.state_dict().items():
        if key == "mask_embedding":
            state["masked_spec_embed"] = value.detach().clone()
            continue
        state[_torchaudio_to_huggingface_key(speechssl_to_torchaudio_key(key))] = (
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
