"""fairseq wav2vec 2.0 / HuBERT checkpoint files -> speechssl encoders (no fairseq needed).

:func:`load_fairseq_checkpoint` reads a ``.pt`` file a user downloaded (e.g.
``hubert_base_ls960.pt``); :func:`encoder_from_fairseq` converts an already unpickled one
(:func:`speechssl.encoders.checkpoint_files.read_checkpoint` reads it weights-only, with
inert stand-ins for fairseq's own classes). Nothing is downloaded.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re

from torch import Tensor

from speechssl.encoders.checkpoint_files import read_checkpoint

from ..config import Wav2Vec2Config
from ..model import Wav2Vec2Encoder
from .torchaudio_format import load_exact

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


def fairseq_to_speechssl_key(key: str) -> str | None:
    """Our parameter name for a fairseq wav2vec 2.0 / HuBERT one (None: not encoder)."""
    for pattern, template in FAIRSEQ_KEY_MAP:
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(*match.groups())
    if FAIRSEQ_IGNORED.fullmatch(key):
        return None
    raise ValueError(f"unexpected fairseq wav2vec2/HuBERT key: {key}")


def speechssl_to_fairseq_key(key: str, layer_norm_extractor: bool = False) -> str:
    """fairseq's name for one of our parameters (:data:`FAIRSEQ_KEY_MAP` read backwards).

    ``layer_norm_extractor``: the Large extractor (a layer norm in every conv block, named
    ``conv_layers.{i}.2.1``) rather than Base's one group norm (``conv_layers.0.2``).
    """
    match = re.fullmatch(r"feature_extractor\.blocks\.(\d+)\.norm\.(weight|bias)", key)
    if match:
        block, kind = match.groups()
        middle = "2.1" if layer_norm_extractor else "2"
        return f"feature_extractor.conv_layers.{block}.{middle}.{kind}"
    for pattern, template in FAIRSEQ_KEY_MAP:
        regex = "^" + re.escape(template).replace(r"\{\}", r"([A-Za-z_0-9]+)") + "$"
        found = re.fullmatch(regex, key)
        if found:
            # the pattern with its groups filled in: (a|b) groups take the matched value
            candidate = re.sub(r"\([^)]*\)", "{}", pattern).replace("\\.", ".")
            candidate = candidate.format(*found.groups())
            if re.fullmatch(pattern, candidate):
                return candidate
    raise ValueError(f"no fairseq name for {key}")


def config_value(container, name: str, default=None):
    """Read a field from a dict, omegaconf node or argparse Namespace."""
    if container is None:
        return default
    if isinstance(container, dict):
        return container.get(name, default)
    try:
        return container[name]
    except Exception:  # noqa: BLE001 - Namespace and friends
        return getattr(container, name, default)


def parse_conv_layers(expression: str) -> list[tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    Evaluated over a tiny grammar (lists, tuples, ints, ``+``, ``*``), never with ``eval``.
    """

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
    return Wav2Vec2Config(**fairseq_config_fields(model_config))


def fairseq_config_fields(model_config) -> dict:
    """The :class:`Wav2Vec2Config` fields of a fairseq (or unilm WavLM) model config."""
    read = lambda name, default: config_value(model_config, name, default)
    layers = parse_conv_layers(
        read("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    )
    extractor_mode = read("extractor_mode", "default")
    return {
        "conv_channels": [layer[0] for layer in layers],
        "conv_kernels": [layer[1] for layer in layers],
        "conv_strides": [layer[2] for layer in layers],
        "conv_bias": bool(read("conv_bias", False)),
        "extractor_mode": "layer_norm" if extractor_mode == "layer_norm" else "group_norm",
        "masked_group_norm": False,
        "feature_grad_mult": float(read("feature_grad_mult", 0.1)),
        "embed_dim": int(read("encoder_embed_dim", 768)),
        "num_layers": int(read("encoder_layers", 12)),
        "num_heads": int(read("encoder_attention_heads", 12)),
        "ffn_dim": int(read("encoder_ffn_embed_dim", 3072)),
        "pos_conv_kernel": int(read("conv_pos", 128)),
        "pos_conv_groups": int(read("conv_pos_groups", 16)),
        "layer_norm_first": bool(read("layer_norm_first", False)),
        "dropout_input": float(read("dropout_input", 0.0)),
        "dropout": float(read("dropout", 0.1)),
        "attention_dropout": float(read("attention_dropout", 0.1)),
        "activation_dropout": float(read("activation_dropout", 0.0)),
        "layer_drop": float(read("encoder_layerdrop", 0.0)),
    }


def load_fairseq_checkpoint(
    path: str | os.PathLike, padding_invariant: bool = False
) -> Wav2Vec2Encoder:
    """A fairseq HuBERT / wav2vec 2.0 checkpoint file (e.g. ``hubert_base_ls960.pt``) -> our
    encoder in eval mode, ready for the downstream recipes. Fine-tuned (``w2v_encoder``)
    checkpoints load their encoder part."""
    return encoder_from_fairseq(read_checkpoint(path), padding_invariant, source=str(path))


def fairseq_model_state(payload, source: str) -> tuple[dict[str, Tensor], object]:
    """``(encoder state dict, model config)`` of an unpickled fairseq checkpoint; a
    fine-tuned (``w2v_encoder``) one gives its pre-trained encoder's part and config."""
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{source}: not a fairseq checkpoint (expected a dict with 'model')")
    state = payload["model"]
    cfg = payload.get("cfg")
    model_config = config_value(cfg, "model") if cfg is not None else payload.get("args")
    if model_config is None:
        raise ValueError(f"{source}: the checkpoint has neither 'cfg' nor 'args'")
    prefix = "w2v_encoder.w2v_model."
    if any(key.startswith(prefix) for key in state):
        # a fine-tuned checkpoint: the pre-trained model's config is nested in w2v_args
        nested = config_value(model_config, "w2v_args")
        model_config = config_value(nested, "model", nested) if nested is not None else model_config
        state = {
            key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)
        }
    return state, model_config


def encoder_from_fairseq(
    payload, padding_invariant: bool = False, source: str = "fairseq checkpoint"
) -> Wav2Vec2Encoder:
    """An unpickled fairseq HuBERT / wav2vec 2.0 checkpoint -> our encoder in eval mode."""
    state, model_config = fairseq_model_state(payload, source)
    config = config_from_fairseq(model_config)
    if padding_invariant:
        config = dataclasses.replace(config, masked_group_norm=True)
    encoder = Wav2Vec2Encoder(config)
    converted = {}
    for key, value in state.items():
        ours = fairseq_to_speechssl_key(key)
        if ours is not None:
            converted[ours] = value
    load_exact(encoder, converted, source=source)
    return encoder.eval()
