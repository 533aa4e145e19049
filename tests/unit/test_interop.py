"""Weight-exact interop with torchaudio, fairseq-format files and Hugging Face.

Every reference model is randomly initialised and small; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch
import torchaudio
from omegaconf import OmegaConf
from torchaudio.models.wav2vec2.utils.import_fairseq import _map_key as torchaudio_fairseq_map_key

from speechssl.encoders import build_encoder
from speechssl.encoders.wav2vec2.convert import (
    FAIRSEQ_KEY_MAP,
    from_huggingface,
    from_torchaudio,
    load_fairseq_checkpoint,
    load_torchaudio_checkpoint,
    speechssl_to_torchaudio_key,
    to_huggingface,
    to_torchaudio,
)

TOLERANCE = 1e-4

# torchaudio wav2vec2_model arguments: a Base-shaped (group norm, post-LN) and a
# Large-shaped (layer norm, conv bias, pre-LN) architecture, narrow and shallow
TINY_CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
COMMON = {
    "extractor_conv_layer_config": TINY_CONV,
    "encoder_embed_dim": 64,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 3,
    "encoder_num_heads": 4,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 128,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_drop": 0.05,
    "aux_num_out": None,
}
ARCHITECTURES = {
    "base": dict(
        COMMON,
        extractor_mode="group_norm",
        extractor_conv_bias=False,
        encoder_layer_norm_first=False,
    ),
    "large": dict(
        COMMON, extractor_mode="layer_norm", extractor_conv_bias=True, encoder_layer_norm_first=True
    ),
}


def torchaudio_model(architecture: str, seed: int = 0):
    torch.manual_seed(seed)
    model = torchaudio.models.wav2vec2_model(**ARCHITECTURES[architecture]).eval()
    # random (non-default) norms and biases so a mis-mapped parameter cannot hide
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def padded_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([8000, 6100, 2300])
    wav = torch.randn(3, 8000, generator=generator)
    for index, length in enumerate(lengths):
        wav[index, length:] = 0.0
    return wav, lengths


def assert_valid_frames_close(ours, theirs, lengths):
    for index, length in enumerate(lengths.tolist()):
        difference = (ours[index, :length] - theirs[index, :length]).abs().max().item()
        assert difference <= TOLERANCE, f"item {index}: max difference {difference}"


@pytest.mark.parametrize("architecture", ["base", "large"])
def test_from_torchaudio_matches_on_a_padded_batch_layer_by_layer(architecture):
    reference = torchaudio_model(architecture)
    encoder = from_torchaudio(reference).eval()
    wav, lengths = padded_batch()
    with torch.no_grad():
        expected, expected_lengths = reference(wav, lengths)
        layers, _ = reference.extract_features(wav, lengths)
        out = encoder(wav, lengths)
    assert out.lengths.tolist() == expected_lengths.tolist()
    assert_valid_frames_close(out.last_hidden_state, expected, lengths=expected_lengths)
    # intermediate layers (torchaudio's last entry lacks the final pre-LN norm)
    for ours, theirs in zip(out.hidden_states[1:-1], layers[:-1]):
        assert_valid_frames_close(ours, theirs, expected_lengths)
    # our padded frames are zero
    for index, length in enumerate(expected_lengths.tolist()):
        assert not out.last_hidden_state[index, length:].any()


@pytest.mark.parametrize("architecture", ["base", "large"])
def test_to_torchaudio_and_round_trip_are_exact(architecture):
    torch.manual_seed(1)
    overrides = {"masked_group_norm": False}
    if architecture == "large":
        overrides.update(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True)
    encoder = build_encoder("hubert_tiny", **overrides).eval()
    reference = to_torchaudio(encoder).eval()
    wav, lengths = padded_batch(seed=2)
    with torch.no_grad():
        expected, expected_lengths = reference(wav, lengths)
        out = encoder(wav, lengths)
    assert_valid_frames_close(out.last_hidden_state, expected, expected_lengths)
    back = from_torchaudio(reference)
    original, returned = encoder.state_dict(), back.state_dict()
    for key, value in original.items():
        if key != "mask_embedding":  # torchaudio's Wav2Vec2Model has no mask embedding
            assert torch.equal(value, returned[key]), key


def test_padding_invariant_conversion_matches_each_utterance_alone():
    """With statistics over valid samples only, each padded item equals torchaudio run on
    that utterance alone (torchaudio's own padded outputs include the padding)."""
    reference = torchaudio_model("base")
    encoder = from_torchaudio(reference, padding_invariant=True).eval()
    wav, lengths = padded_batch()
    with torch.no_grad():
        out = encoder(wav, lengths)
        for index, length in enumerate(lengths.tolist()):
            alone, alone_lengths = reference(wav[index : index + 1, :length])
            frames = int(alone_lengths[0]) if alone_lengths is not None else alone.shape[1]
            difference = (out.last_hidden_state[index, :frames] - alone[0, :frames]).abs().max()
            assert difference <= TOLERANCE


@pytest.mark.parametrize("builder", ["hubert_base", "hubert_large", "wav2vec2_base"])
def test_full_size_models_map_every_key_both_ways(builder):
    # on the meta device: the full key/shape mapping without allocating ~1 GB of weights
    with torch.device("meta"):
        reference = getattr(torchaudio.models, builder)()
        encoder = from_torchaudio(reference)
        back = to_torchaudio(encoder).state_dict()
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in back.items()} == expected
    if builder == "hubert_base":
        assert (encoder.num_layers, encoder.output_dim, encoder.config.num_heads) == (12, 768, 12)
        assert encoder.config.ffn_dim == 3072


def test_torchaudio_checkpoint_file(tmp_path):
    reference = torchaudio_model("large")
    path = tmp_path / "model.pt"
    torch.save(reference.state_dict(), path)
    encoder = load_torchaudio_checkpoint(path, preset=ARCHITECTURES["large"])
    wav, lengths = padded_batch()
    with torch.no_grad():
        expected, expected_lengths = reference(wav, lengths)
        out = encoder(wav, lengths)
    assert_valid_frames_close(out.last_hidden_state, expected, expected_lengths)
    with pytest.raises(ValueError, match="unknown torchaudio preset"):
        load_torchaudio_checkpoint(path, preset="nonsense")


# ---------------------------------------------------------------------------------------
# fairseq


def speechssl_to_fairseq_key(key: str, layer_norm_extractor: bool) -> str:
    """Invert FAIRSEQ_KEY_MAP; fairseq names the first conv's norm by extractor mode."""
    import re

    for pattern, template in FAIRSEQ_KEY_MAP:
        if layer_norm_extractor and pattern.startswith(r"feature_extractor\.conv_layers\.(0)"):
            continue
        regex = "^" + re.escape(template).replace(r"\{\}", r"([A-Za-z_0-9]+)") + "$"
        match = re.fullmatch(regex, key)
        if match:
            candidate = re.sub(r"\([^)]*\)", "{}", pattern).replace("\\.", ".")
            candidate = candidate.format(*match.groups())
            if re.fullmatch(pattern, candidate):
                return candidate
    raise AssertionError(key)


def fabricate_fairseq_checkpoint(path, architecture: str, config_style: str):
    """A fairseq-format file built from a torchaudio model; names are cross-checked against
    torchaudio's own fairseq importer."""
    reference = torchaudio_model(architecture)
    encoder = from_torchaudio(reference)
    extractor_mode = "default" if architecture == "base" else "layer_norm"
    is_large = architecture == "large"
    state = {}
    for key, value in encoder.state_dict().items():
        fairseq_key = speechssl_to_fairseq_key(key, layer_norm_extractor=is_large)
        if key != "mask_embedding":
            assert torchaudio_fairseq_map_key(fairseq_key) == _torchaudio_legacy(
                speechssl_to_torchaudio_key(key)
            )
        state[fairseq_key] = value.clone()
    state["final_proj.weight"] = torch.randn(8, 64)  # a pre-training head the loader skips
    model_config = {
        "_name": "hubert",
        "extractor_mode": extractor_mode,
        "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2",
        "conv_bias": is_large,
        "encoder_embed_dim": 64,
        "encoder_layers": 3,
        "encoder_attention_heads": 4,
        "encoder_ffn_embed_dim": 128,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "layer_norm_first": is_large,
        "dropout_input": 0.1,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.05,
        "feature_grad_mult": 0.1,
    }
    if config_style == "cfg":
        payload = {
            "cfg": OmegaConf.create({"model": model_config, "task": {"labels": ["km"]}}),
            "model": state,
        }
    else:
        payload = {"args": argparse.Namespace(**model_config), "model": state}
    torch.save(payload, path)
    return reference


def _torchaudio_legacy(key: str) -> str:
    # torchaudio's fairseq importer writes the old weight-norm names
    return key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v"
    )


@pytest.mark.parametrize(("architecture", "config_style"), [("base", "cfg"), ("large", "args")])
def test_fairseq_checkpoint_loads_exactly(tmp_path, architecture, config_style):
    path = tmp_path / "checkpoint.pt"
    reference = fabricate_fairseq_checkpoint(path, architecture, config_style)
    with pytest.raises(pickle.UnpicklingError):  # why the restricted loader exists
        torch.load(path, weights_only=True)
    encoder = load_fairseq_checkpoint(path)
    assert not encoder.training
    wav, lengths = padded_batch()
    with torch.no_grad():
        expected, expected_lengths = reference(wav, lengths)
        out = encoder(wav, lengths)
    assert_valid_frames_close(out.last_hidden_state, expected, expected_lengths)


class _Exploit:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_fairseq_loader_refuses_arbitrary_globals(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"cfg": {"model": {}}, "model": {}, "payload": _Exploit()}, path)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_fairseq_checkpoint(path)
    truncated = tmp_path / "truncated.pt"
    fabricate_fairseq_checkpoint(tmp_path / "good.pt", "base", "cfg")
    truncated.write_bytes((tmp_path / "good.pt").read_bytes()[:5000])
    with pytest.raises(ValueError):
        load_fairseq_checkpoint(truncated)


# ---------------------------------------------------------------------------------------
# Hugging Face


@pytest.mark.parametrize("model_type", ["hubert", "unispeech-sat"])
def test_to_huggingface_loads_with_equal_outputs(tmp_path, model_type):
    import transformers

    torch.manual_seed(3)
    encoder = build_encoder("hubert_tiny", masked_group_norm=False).eval()
    to_huggingface(encoder, tmp_path / "hf", model_type=model_type)
    model_class = (
        transformers.HubertModel if model_type == "hubert" else transformers.UniSpeechSatModel
    )
    model = model_class.from_pretrained(str(tmp_path / "hf"), local_files_only=True).eval()
    wav, lengths = padded_batch()
    attention_mask = torch.arange(wav.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        theirs = model(wav, attention_mask=attention_mask.long(), output_hidden_states=True)
        ours = encoder(wav, lengths)
    assert len(theirs.hidden_states) == len(ours.hidden_states)
    for mine, reference in zip(ours.hidden_states, theirs.hidden_states):
        assert_valid_frames_close(mine, reference, ours.lengths)
    assert torch.equal(model.masked_spec_embed.detach(), encoder.mask_embedding.detach())

    back = from_huggingface(tmp_path / "hf")
    with torch.no_grad():
        again = back(wav, lengths)
    assert_valid_frames_close(again.last_hidden_state, ours.last_hidden_state, ours.lengths)
    assert torch.equal(back.mask_embedding, encoder.mask_embedding)
