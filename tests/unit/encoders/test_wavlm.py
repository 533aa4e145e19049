"""WavLM: weight-exact parity with torchaudio's ``wavlm_model`` and Hugging Face's
``WavLMModel`` (both ways, plus round trips), unilm checkpoints, padding exactness, and the
gated relative position bias itself.

Every reference model is randomly initialised and small (one Base-sized check); nothing is
downloaded. torchaudio's WavLM cannot take ``lengths`` (its attention asserts there is no
mask), so its padded-batch reference is each utterance run alone.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchaudio

from speechssl.encoders import build_encoder
from speechssl.encoders.wavlm import WavLMEncoder, convert, relative_position_buckets, wavlm_tiny
from speechssl.loading import load_encoder, open_encoder

TOLERANCE = 1e-4
TINY_CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
COMMON = {
    "extractor_conv_layer_config": TINY_CONV,
    "encoder_embed_dim": 64,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 3,
    "encoder_num_heads": 4,
    "encoder_num_buckets": 32,
    "encoder_max_distance": 100,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 128,
    "encoder_ff_interm_dropout": 0.1,
    "encoder_dropout": 0.1,
    "encoder_layer_drop": 0.1,
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
# two lengths: frames 49 and 28, enough for offsets beyond the exact buckets (8)
LENGTHS = (16000, 9000)


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Move every parameter off its initial value so a mis-mapped one cannot hide
    (the gate constants start at 1, norms at 1/0, biases at 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def torchaudio_wavlm(architecture: str, seed: int = 0):
    torch.manual_seed(seed)
    return randomise(torchaudio.models.wavlm_model(**ARCHITECTURES[architecture]), seed)


def padded_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    wav = torch.randn(len(LENGTHS), max(LENGTHS), generator=generator)
    lengths = torch.tensor(LENGTHS)
    wav[1, LENGTHS[1] :] = 0.0
    return wav, lengths


def per_utterance(reference, wav, lengths) -> list[torch.Tensor]:
    """torchaudio's output for each utterance alone: (F_i, D) each."""
    with torch.no_grad():
        return [
            reference(wav[i : i + 1, :length])[0][0] for i, length in enumerate(lengths.tolist())
        ]


def max_difference_on_valid_frames(ours, out_lengths, references) -> float:
    return max(
        (ours[i, :length] - reference).abs().max().item()
        for i, (length, reference) in enumerate(zip(out_lengths.tolist(), references))
    )


def test_buckets_are_torchaudios_and_saturate():
    reference = torchaudio.models.wavlm_base().encoder.transformer.layers[0].attention
    ours = relative_position_buckets(1200, 320, 800)
    positions = torch.arange(1200)
    theirs = reference._relative_positions_bucket(positions[None, :] - positions[:, None])
    assert torch.equal(ours, theirs)
    assert ours.max().item() == 319 and ours[0, 0].item() == 0
    # exact up to num_buckets / 4 = 80 on either side, then shared logarithmic buckets
    assert ours[0, 1:80].tolist() == list(range(161, 240))
    assert ours[0, 900].item() == ours[0, 1199].item() == 319


@pytest.mark.parametrize("architecture", ["base", "large"])
def test_from_torchaudio_on_a_padded_batch(architecture):
    reference = torchaudio_wavlm(architecture)
    wav, lengths = padded_batch()
    expected = per_utterance(reference, wav, lengths)
    # padding-invariant statistics: the padded batch equals each utterance alone
    encoder = convert.from_torchaudio(reference, padding_invariant=True).eval()
    with torch.no_grad():
        out = encoder(wav, lengths)
    assert out.lengths.tolist() == [len(item) for item in expected]
    assert max_difference_on_valid_frames(out.last_hidden_state, out.lengths, expected) <= TOLERANCE
    for index, length in enumerate(out.lengths.tolist()):
        assert not out.last_hidden_state[index, length:].any()
    # torchaudio's own statistics (over the padded tail): the unpadded item still matches
    plain = convert.from_torchaudio(reference).eval()
    assert not plain.config.masked_group_norm
    with torch.no_grad():
        first = plain(wav, lengths).last_hidden_state[0]
    assert (first - expected[0]).abs().max().item() <= TOLERANCE
    # and the outputs are not trivially equal: another model's differ
    other = convert.from_torchaudio(torchaudio_wavlm(architecture, seed=5)).eval()
    with torch.no_grad():
        assert (other(wav, lengths).last_hidden_state[0] - expected[0]).abs().max() > 1e-2


@pytest.mark.parametrize("architecture", ["base", "large"])
def test_to_torchaudio_and_round_trip(architecture):
    overrides = {"num_buckets": 32, "max_distance": 100}
    if architecture == "large":
        overrides.update(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True)
    torch.manual_seed(1)
    encoder = randomise(build_encoder("wavlm_tiny", num_layers=3, **overrides), seed=1)
    reference = to_torchaudio_eval = convert.to_torchaudio(encoder).eval()
    wav, lengths = padded_batch(seed=2)
    expected = per_utterance(to_torchaudio_eval, wav, lengths)
    with torch.no_grad():
        out = encoder(wav, lengths)
    assert max_difference_on_valid_frames(out.last_hidden_state, out.lengths, expected) <= TOLERANCE
    back = convert.from_torchaudio(reference)
    returned = back.state_dict()
    for key, value in encoder.state_dict().items():
        if key != "mask_embedding":  # torchaudio's model has none
            assert torch.equal(value, returned[key]), key


def test_base_size_parity_with_torchaudio_wavlm_base():
    """The real Base shape (320 buckets, max distance 800, 12 heads), one short utterance."""
    torch.manual_seed(3)
    reference = randomise(torchaudio.models.wavlm_base(), seed=3)
    encoder = convert.from_torchaudio(reference).eval()
    assert encoder.config.num_buckets == 320 and encoder.config.max_distance == 800
    assert (
        sum(p.numel() for p in encoder.parameters())
        == sum(p.numel() for p in reference.parameters()) + encoder.config.embed_dim
    )  # + our mask embedding
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, _ = reference(wav)
        out = encoder(wav)
    assert (out.last_hidden_state - expected).abs().max().item() <= TOLERANCE


def test_torchaudio_state_dict_files_load_through_the_door(tmp_path):
    reference = torchaudio_wavlm("base")
    torch.save(
        {"state_dict": reference.state_dict(), "preset": ARCHITECTURES["base"]}, tmp_path / "ta.pt"
    )
    opened = open_encoder(tmp_path / "ta.pt")
    assert opened.kind == "torchaudio" and isinstance(opened.encoder, WavLMEncoder)
    wav, lengths = padded_batch()
    with torch.no_grad():
        first = opened.encoder(wav[:1], lengths[:1]).last_hidden_state[0]
    assert (first - per_utterance(reference, wav, lengths)[0]).abs().max() <= TOLERANCE
    # a tiny bare one fits no preset: one line saying how to name it
    torch.save(reference.state_dict(), tmp_path / "tiny_bare.pt")
    with pytest.raises(ValueError, match="fit no torchaudio preset") as error:
        load_encoder(tmp_path / "tiny_bare.pt")
    message = str(error.value)
    assert "\n" not in message and len(message) - len(str(tmp_path)) < 400, message


@pytest.mark.parametrize("architecture", ["base", "large"])
def test_huggingface_both_ways_on_a_padded_batch(tmp_path, architecture):
    transformers = pytest.importorskip("transformers")
    overrides = {"num_buckets": 32, "max_distance": 100, "masked_group_norm": False}
    if architecture == "large":
        overrides.update(extractor_mode="layer_norm", conv_bias=True, layer_norm_first=True)
    torch.manual_seed(6)
    encoder = randomise(build_encoder("wavlm_tiny", num_layers=3, **overrides), seed=6)
    convert.to_huggingface(encoder, tmp_path / "hf")
    reference = transformers.WavLMModel.from_pretrained(str(tmp_path / "hf")).eval()
    wav, lengths = padded_batch(seed=7)
    attention_mask = (torch.arange(wav.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        expected = reference(wav, attention_mask=attention_mask).last_hidden_state
        out = encoder(wav, lengths)
    references = [expected[i, :length] for i, length in enumerate(out.lengths.tolist())]
    assert (
        max_difference_on_valid_frames(out.last_hidden_state, out.lengths, references) <= TOLERANCE
    )
    # HF -> ours, from the folder through the door: the same weights and outputs
    opened = open_encoder(tmp_path / "hf")
    assert opened.kind == "huggingface" and isinstance(opened.encoder, WavLMEncoder)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, opened.encoder.state_dict()[key]), key
    # and from an HF model that never was ours
    torch.manual_seed(8)
    fresh = randomise(transformers.WavLMModel(reference.config), seed=8)
    converted = convert.from_huggingface_model(fresh).eval()
    with torch.no_grad():
        expected = fresh(wav, attention_mask=attention_mask).last_hidden_state
        out = converted(wav, lengths)
    references = [expected[i, :length] for i, length in enumerate(out.lengths.tolist())]
    assert (
        max_difference_on_valid_frames(out.last_hidden_state, out.lengths, references) <= TOLERANCE
    )


# unilm's parameter names, written out independently of the converter's tables
def unilm_name(key: str, layer_norm_extractor: bool) -> str:
    parts = key.split(".")
    if key == "mask_embedding":
        return "mask_emb"
    if key == "transformer.relative_position_embedding.weight":
        return "encoder.layers.0.self_attn.relative_attention_bias.weight"
    if parts[0] == "feature_extractor":
        block = parts[2]
        if parts[3] == "norm":
            middle = "2.1" if layer_norm_extractor else "2"
            return f"feature_extractor.conv_layers.{block}.{middle}.{parts[4]}"
        return f"feature_extractor.conv_layers.{block}.0.{parts[3]}"
    if parts[0] == "feature_projection":
        return (
            {"layer_norm": "layer_norm", "projection": "post_extract_proj"}[parts[1]]
            + "."
            + parts[2]
        )
    if parts[0] == "positional_embedding":
        return f"encoder.pos_conv.0.{parts[1]}"
    if parts[0] == "layer_norm":
        return f"encoder.layer_norm.{parts[1]}"
    layer, rest = parts[2], ".".join(parts[3:])
    renames = {
        "attention.gate_projection": "self_attn.grep_linear",
        "attention.gate_scale": "self_attn.grep_a",
        "attention": "self_attn",
        "layer_norm": "self_attn_layer_norm",
        "feed_forward.intermediate_dense": "fc1",
        "feed_forward.output_dense": "fc2",
    }
    for ours, theirs in renames.items():
        if rest == ours or rest.startswith(ours + "."):
            return f"encoder.layers.{layer}.{theirs}{rest[len(ours) :]}"
    return f"encoder.layers.{layer}.{rest}"


@pytest.mark.parametrize("architecture", ["base", "large"])
def test_unilm_checkpoint_loads_exactly(tmp_path, architecture):
    reference = torchaudio_wavlm(architecture, seed=9)
    encoder = convert.from_torchaudio(reference)
    is_large = architecture == "large"
    payload = convert.to_unilm_checkpoint(encoder)
    assert set(payload["model"]) == {unilm_name(key, is_large) for key in encoder.state_dict()}
    payload["model"]["label_embs_concat"] = torch.randn(20, 16)  # pre-training head: skipped
    payload["model"]["final_proj.weight"] = torch.randn(16, 64)
    torch.save(payload, tmp_path / "WavLM-Tiny.pt")
    opened = open_encoder(tmp_path / "WavLM-Tiny.pt")
    assert opened.kind == "unilm" and not opened.encoder.training
    assert opened.encoder.config.num_buckets == 32 and opened.encoder.config.max_distance == 100
    wav, lengths = padded_batch(seed=10)
    expected = per_utterance(reference, wav, lengths)
    with torch.no_grad():
        first = opened.encoder(wav[:1], lengths[:1]).last_hidden_state[0]
    assert (first - expected[0]).abs().max().item() <= TOLERANCE


def test_fairseq_style_wavlm_checkpoint_with_config_objects(tmp_path):
    """A WavLM trained with fairseq pickles omegaconf nodes under cfg.model: read
    weights-only with those classes allowed, nothing else."""
    from omegaconf import OmegaConf

    reference = torchaudio_wavlm("base", seed=11)
    payload = convert.to_unilm_checkpoint(convert.from_torchaudio(reference))
    torch.save(
        {"cfg": OmegaConf.create({"model": payload["cfg"]}), "model": payload["model"]},
        tmp_path / "fairseq_wavlm.pt",
    )
    opened = open_encoder(tmp_path / "fairseq_wavlm.pt")
    assert opened.kind == "unilm"
    wav, lengths = padded_batch(seed=12)
    with torch.no_grad():
        second = opened.encoder(wav[1:, : LENGTHS[1]]).last_hidden_state[0]
    assert (second - per_utterance(reference, wav, lengths)[1]).abs().max() <= TOLERANCE


def test_padded_batch_equals_each_utterance_and_empty_items_are_safe():
    torch.manual_seed(0)
    encoder = WavLMEncoder(wavlm_tiny()).eval()
    wav = torch.randn(3, 9000)
    lengths = torch.tensor([9000, 5000, 0])
    with torch.no_grad():
        batch = encoder(wav, lengths)
        alone = encoder(wav[1:2, :5000], lengths[1:2])
    frames = alone.lengths.item()
    for ours, single in zip(batch.hidden_states, alone.hidden_states):
        assert (ours[1, :frames] - single[0]).abs().max() <= 1e-5
    assert torch.isfinite(batch.last_hidden_state).all() and not batch.last_hidden_state[2].any()


def test_gate_and_bias_change_the_output():
    """The bias is learned and gated: zeroing the embedding or the gate scale changes the
    outputs, and an offset's bias is shared by every layer."""
    torch.manual_seed(0)
    encoder = randomise(WavLMEncoder(wavlm_tiny()), seed=0)
    wav, lengths = torch.randn(1, 8000), torch.tensor([8000])
    with torch.no_grad():
        before = encoder(wav, lengths).last_hidden_state
        encoder.transformer.layers[1].attention.gate_scale.zero_()
        gated = encoder(wav, lengths).last_hidden_state
        encoder.transformer.relative_position_embedding.weight.zero_()
        unbiased = encoder(wav, lengths).last_hidden_state
    assert (before - gated).abs().max() > 1e-4 and (gated - unbiased).abs().max() > 1e-4
    with torch.no_grad():
        bias = encoder.transformer.position_bias(5, "cpu")
    assert bias.shape == (4, 5, 5) and math.isclose(float(bias.abs().sum()), 0.0)


def test_layer_drop_is_training_only_and_keeps_the_first_layer():
    torch.manual_seed(0)
    encoder = WavLMEncoder(wavlm_tiny()).eval()
    encoder.transformer.layer_drop = 1.0
    wav, lengths = torch.randn(1, 4000), torch.tensor([4000])
    with torch.no_grad():
        eval_out = encoder(wav, lengths)
        encoder.train()
        encoder.dropout.p = 0.0
        train_out = encoder(wav, lengths)
    assert not torch.equal(eval_out.hidden_states[1], eval_out.hidden_states[2])
    # in training with layer_drop=1 every layer after the first is skipped
    assert torch.equal(train_out.hidden_states[1], train_out.hidden_states[2])
