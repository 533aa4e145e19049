"""torchaudio ``Wav2Vec2Model`` <-> speechssl wav2vec 2.0 / HuBERT, weight-exact.

- :func:`from_torchaudio` / :func:`to_torchaudio` convert a model object;
- :func:`encoder_from_torchaudio_state` rebuilds our encoder from a saved state dict (its
  preset is recognised from the parameter shapes or named beside it);
- :func:`load_torchaudio_checkpoint` does the same from a file.

A converted encoder keeps torchaudio's padding behaviour (``masked_group_norm=False``,
group-norm statistics include the padded tail) so outputs match the reference on the same
padded batch; pass ``padding_invariant=True`` for statistics over valid samples only.
"""

from __future__ import annotations

import dataclasses
import os
import re

import torch
import torchaudio
from torch import Tensor

from speechssl.encoders.checkpoint_files import read_checkpoint
from speechssl.safe_io import check_allocation, short_reason

from ..config import Wav2Vec2Config
from ..model import Wav2Vec2Encoder

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


def legacy_weight_norm_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
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
        raise ValueError(
            "not a wav2vec 2.0 / HuBERT model (a WavLM one converts with "
            "speechssl.encoders.wavlm.convert.from_torchaudio)"
        )
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
    for key, value in legacy_weight_norm_keys(model.state_dict()).items():
        ours = torchaudio_to_speechssl_key(key)
        if ours is not None:
            state[ours] = value.detach().clone()
    load_exact(encoder, state, source="torchaudio model")
    return encoder.train(model.training)


def to_torchaudio(encoder: Wav2Vec2Encoder):
    """Our wav2vec2-family encoder -> torchaudio ``Wav2Vec2Model`` with the same weights."""
    if not isinstance(encoder, Wav2Vec2Encoder):
        raise TypeError(
            f"to_torchaudio needs a wav2vec2-family encoder, got {type(encoder).__name__}"
        )
    encoder.require_conv_front_end("torchaudio")
    config = encoder.config
    model = torchaudio.models.wav2vec2_model(
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


def short_key_lists(missing: list[str], unexpected: list[str]) -> str:
    """``missing [a, b, c] and 9 more; unexpected [...]``: at most three names of each."""

    def listed(keys: list[str]) -> str:
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return f"[{', '.join(keys[:3])}]{more}"

    parts = [
        f"{name} {listed(keys)}"
        for name, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    return "; ".join(parts)


def load_exact(encoder: Wav2Vec2Encoder, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``encoder``; only ``mask_embedding`` may be absent."""
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(state) - SPEECHSSL_ONLY)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit the encoder: {short_key_lists(missing, unexpected)}"
        )
    shapes = encoder.state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(shapes[key].shape):
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(shapes[key].shape)}"
            )
    encoder.load_state_dict(state, strict=False)


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

    See :func:`encoder_from_torchaudio_state` for ``preset``.

    Raises:
        ValueError: an unreadable file, or weights that fit no preset (the message says how
            to name the architecture).
    """
    return encoder_from_torchaudio_state(read_checkpoint(path), preset, source=str(path))


def encoder_from_torchaudio_state(
    payload, preset: str | dict | None = None, source: str = "state dict"
) -> Wav2Vec2Encoder:
    """A torchaudio ``Wav2Vec2Model`` state dict (already loaded) -> our encoder (eval mode).

    ``preset`` names the torchaudio builder the weights belong to (``hubert_base``,
    ``hubert_large``, ``wav2vec2_base``, ...) or is a dict of keyword arguments for
    ``torchaudio.models.wav2vec2_model``. The payload may also be a dict
    ``{"state_dict": ..., "preset": ...}`` (how to ship a non-standard architecture). With
    neither, the preset whose parameter shapes match the state dict is used (``hubert_base``
    and ``wav2vec2_base`` share one architecture and differ only in dropout rates).
    """
    if isinstance(payload, dict) and "state_dict" in payload:
        preset = payload.get("preset", preset)
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(
        isinstance(value, Tensor) for value in payload.values()
    ):
        raise ValueError(f"{source}: not a torchaudio state dict (expected a dict of tensors)")
    state = legacy_weight_norm_keys(payload)
    state = {key: value for key, value in state.items() if not TORCHAUDIO_ONLY.fullmatch(key)}
    if preset is None:
        preset = match_torchaudio_preset(state)
        if preset is None:
            raise ValueError(
                f"{source}: the weights fit none of torchaudio's presets {TORCHAUDIO_PRESETS}; "
                "save them as {'state_dict': model.state_dict(), 'preset': {<the "
                "torchaudio.models.wav2vec2_model keyword arguments>}}"
            )
    if isinstance(preset, dict):
        check_preset_arguments(torchaudio.models.wav2vec2_model, preset, source)
        model = torchaudio.models.wav2vec2_model(**{"aux_num_out": None, **preset})
    elif preset in TORCHAUDIO_PRESETS:
        model = getattr(torchaudio.models, preset)()
    else:
        raise ValueError(
            f"unknown torchaudio preset {preset!r}; expected one of {TORCHAUDIO_PRESETS} or a dict"
        )
    mismatches = shape_mismatches(model.state_dict(), state)
    if mismatches:
        # checked here: load_state_dict would raise a many-line RuntimeError on a shape
        raise ValueError(f"{source}: not a torchaudio {preset} state dict ({mismatches})")
    model.load_state_dict(state, strict=False)
    return from_torchaudio(model.eval()).eval()


def check_preset_arguments(builder, preset: dict, source: str) -> None:
    """Build ``builder(aux_num_out=None, **preset)`` (torchaudio's ``wav2vec2_model`` or
    ``wavlm_model``) on the meta device: a ``preset`` dict from a file with unknown or
    missing arguments, values of the wrong type or sizes no machine holds is one line.

    Raises:
        ValueError: naming ``source`` and what torchaudio refused.
    """
    arguments = {"aux_num_out": None, **preset}
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            parameters = sum(p.numel() for p in builder(**arguments).parameters())
    except Exception as error:  # noqa: BLE001 - a builder refuses bad arguments with any type
        raise ValueError(
            f"{source}: the 'preset' dict is not a usable {builder.__name__} configuration "
            f"({type(error).__name__}: {short_reason(error)})"
        ) from None
    check_allocation(parameters * 4, f"{source}: the 'preset' dict's {parameters:,} parameters")


def shape_mismatches(
    expected: dict[str, Tensor],
    state: dict[str, Tensor],
    ignored: re.Pattern = TORCHAUDIO_ONLY,
    shown: int = 3,
) -> str:
    """A short description of how ``state`` differs from ``expected`` ('' when it fits)."""
    missing = sorted(key for key in expected if key not in state and not ignored.fullmatch(key))
    unexpected = sorted(key for key in state if key not in expected)
    reshaped = sorted(
        key for key in state if key in expected and state[key].shape != expected[key].shape
    )
    problems = [
        f"{name} {keys[:shown]}{' ...' if len(keys) > shown else ''}"
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
    state = legacy_weight_norm_keys(state)
    state = {key: value for key, value in state.items() if not TORCHAUDIO_ONLY.fullmatch(key)}
    projection = state.get("encoder.feature_projection.projection.weight")
    width = None if projection is None else projection.shape[0]
    for name in TORCHAUDIO_PRESETS:
        if width != _TORCHAUDIO_PRESET_WIDTHS[name]:
            continue  # building a preset takes ~0.5 s even on the meta device: skip misfits
        # on the meta device: shapes only, no memory for the weights of the large presets
        with torch.device("meta"):
            expected = getattr(torchaudio.models, name)().state_dict()
        if not shape_mismatches(expected, state):
            return name
    return None
