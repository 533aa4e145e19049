"""torchaudio-style invariants for every encoder preset.

Presets larger than ``tiny`` run with one layer (their widths unchanged) to fit the CPU
test budget; the per-layer code is the same for every depth.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechssl.config import CONF_DIR, compose, encoder_preset_yaml
from speechssl.encoders import CONFIG_SCHEMAS, PRESETS, build_config, build_encoder
from speechssl.encoders.wav2vec2 import conv_output_lengths

TOLERANCE = 1e-4
TINY = [
    "hubert_tiny",
    "hubert_mel_tiny",
    "fbank_transformer_tiny",
    "conformer_tiny",
    "tpc_tiny",
    "apc_tiny",
]


def build_small(name: str, **overrides):
    torch.manual_seed(0)
    if not name.endswith("tiny"):
        overrides.setdefault("num_layers", 1)
    return build_encoder(name, **overrides).eval()


def padded(lengths: list[int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    wav = torch.randn(len(lengths), max(lengths), generator=generator)
    for index, length in enumerate(lengths):
        wav[index, length:] = 0.0
    return wav, torch.tensor(lengths)


def expected_frames(encoder, lengths: torch.Tensor) -> torch.Tensor:
    """Output lengths from the conv / framing arithmetic ``L -> floor((L - k) / s) + 1``."""
    config = encoder.config
    frames = torch.where(lengths >= 400, (lengths - 400) // 160 + 1, 0)  # 25 ms / 10 ms fbank
    if config.family in ("wav2vec2", "wavlm"):  # WavLM shares the front ends
        if config.front_end == "fbank":
            return frames // config.stack_frames  # whole stacks of filterbank frames
        return conv_output_lengths(lengths, config.conv_kernels, config.conv_strides)
    if config.family in ("fbank_transformer", "conformer"):
        for _ in range(2):  # two 3x3 stride-2 convolutions
            frames = ((frames - 3) // 2 + 1).clamp(min=0)
    return frames


# wav2vec2_base has hubert_base's architecture (only training hyperparameters differ)
@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"wav2vec2_base", "apc"}))
def test_batched_equals_each_utterance_alone(name):
    encoder = build_small(name)
    wav, lengths = padded([6400, 4700, 2300] if name.endswith("tiny") else [4000, 2900, 1700])
    with torch.no_grad():
        batch = encoder(wav, lengths)
        assert batch.lengths.tolist() == expected_frames(encoder, lengths).tolist()
        assert len(batch.hidden_states) == encoder.num_layers + 1
        assert torch.equal(batch.hidden_states[-1], batch.last_hidden_state)
        for state in batch.hidden_states:
            assert state.shape == (3, int(batch.lengths.max()), encoder.output_dim)
        for index, length in enumerate(lengths.tolist()):
            alone = encoder(wav[index : index + 1, :length], lengths[index : index + 1])
            frames = int(alone.lengths[0])
            assert frames == int(batch.lengths[index])
            for batched_state, alone_state in zip(batch.hidden_states, alone.hidden_states):
                difference = (batched_state[index, :frames] - alone_state[0, :frames]).abs().max()
                assert difference <= TOLERANCE, f"{name} item {index}: {difference}"
                # padded frames are zero
                assert not batched_state[index, frames:].any()


# the fewest samples that give exactly one output frame
ONE_FRAME = {"wav2vec2": 400, "fbank_transformer": 400 + 6 * 160, "conformer": 400 + 6 * 160}


@pytest.mark.parametrize("name", TINY)
def test_zero_length_and_one_frame_inputs(name):
    encoder = build_small(name)
    with torch.no_grad():
        empty = encoder(torch.zeros(2, 0), torch.tensor([0, 0]))
        assert empty.last_hidden_state.shape == (2, 0, encoder.output_dim)
        assert empty.lengths.tolist() == [0, 0]
        assert len(empty.hidden_states) == encoder.num_layers + 1

        one = ONE_FRAME.get(encoder.config.family, 400)
        if encoder.config.family == "wav2vec2" and encoder.config.front_end == "fbank":
            one = 400 + 160 * (encoder.config.stack_frames - 1)  # one whole stack
        single = encoder(torch.randn(1, one), torch.tensor([one]))
        assert single.lengths.tolist() == [1]
        assert single.last_hidden_state.shape == (1, 1, encoder.output_dim)
        assert torch.isfinite(single.last_hidden_state).all()

        # a zero-length item beside a normal one: zeros, and no NaN spreading
        wav, lengths = padded([4000, 0])
        mixed = encoder(wav, lengths)
        assert mixed.lengths[1] == 0
        assert torch.isfinite(mixed.last_hidden_state).all()
        assert not mixed.last_hidden_state[1].any()


def test_torch_compile_matches_eager():
    """torch.compile's graph capture runs the waveform encoder with eager's outputs and
    gradients. The 'eager' backend keeps the test free of a C++ compiler and fast; the
    benchmark exercises the inductor backend where one is available."""
    encoder = build_small("hubert_tiny", num_layers=1)
    wav, lengths = padded([4000, 2500])
    compiled = torch.compile(encoder, backend="eager")
    eager_out = encoder(wav, lengths)
    compiled_out = compiled(wav, lengths)
    assert torch.allclose(eager_out.last_hidden_state, compiled_out.last_hidden_state, atol=1e-5)
    compiled_out.last_hidden_state.sum().backward()
    assert all(parameter.grad is not None for parameter in encoder.transformer.parameters())


@pytest.mark.parametrize("name", ["tpc_tiny", "apc_tiny"])
def test_predictive_encoders_are_causal(name):
    encoder = build_small(name)
    feats, lengths = encoder.features(*padded([6000, 4000]))
    cut = 12
    changed = feats.clone()
    changed[:, cut + 1 :] += torch.randn_like(changed[:, cut + 1 :])
    with torch.no_grad():
        before = encoder.forward_features(feats, lengths)
        after = encoder.forward_features(changed, lengths)
    for state_before, state_after in zip(before.hidden_states, after.hidden_states):
        assert torch.allclose(state_before[:, : cut + 1], state_after[:, : cut + 1], atol=1e-6)
    assert not torch.allclose(
        before.last_hidden_state[:, cut + 1 :], after.last_hidden_state[:, cut + 1 :]
    )


def test_wav2vec2_pieces_for_objectives():
    encoder = build_small("hubert_tiny")
    wav, lengths = padded([8000, 5000])
    features, frame_lengths = encoder.extract_features(wav, lengths)
    assert features.shape == (2, 24, 32) and frame_lengths.tolist() == [24, 15]
    with torch.no_grad():
        full = encoder(wav, lengths)
        pieces = encoder.encode(encoder.project(features), frame_lengths)
        first = encoder.encode(encoder.project(features), frame_lengths, output_layer=1)
    assert torch.equal(full.last_hidden_state, pieces.last_hidden_state)
    assert len(first.hidden_states) == 2
    assert torch.allclose(first.last_hidden_state, full.hidden_states[1])

    chosen = torch.zeros(2, 24, dtype=torch.bool)
    chosen[:, 3:8] = True

    def mask_fn(x, padding_mask):
        assert padding_mask.tolist() == (torch.arange(24)[None] >= frame_lengths[:, None]).tolist()
        return torch.where(chosen[..., None], encoder.mask_embedding.to(x.dtype), x)

    masked = encoder.encode(encoder.project(features), frame_lengths, mask_fn=mask_fn)
    masked.last_hidden_state.sum().backward()
    assert encoder.mask_embedding.grad is not None and encoder.mask_embedding.grad.abs().sum() > 0


def test_feature_grad_mult_and_freezing():
    wav, lengths = padded([3200, 2000])

    def conv_grad(**overrides):
        torch.manual_seed(0)
        encoder = build_encoder(
            "hubert_tiny",
            dropout=0.0,
            attention_dropout=0.0,
            dropout_input=0.0,
            layer_drop=0.0,
            **overrides,
        ).train()
        encoder(wav, lengths).last_hidden_state.pow(2).sum().backward()
        return encoder, encoder.feature_extractor.blocks[0].weight.grad

    _, full = conv_grad(feature_grad_mult=1.0)
    _, scaled = conv_grad(feature_grad_mult=0.1)
    assert torch.allclose(scaled, 0.1 * full, rtol=1e-3, atol=1e-8)

    torch.manual_seed(0)
    encoder = build_encoder("hubert_tiny").train()
    encoder.freeze_feature_extractor()
    encoder(wav, lengths).last_hidden_state.sum().backward()
    assert all(parameter.grad is None for parameter in encoder.feature_extractor.parameters())
    assert encoder.feature_projection.projection.weight.grad is not None


def test_layer_drop_skips_whole_layers_in_training_only():
    encoder = build_small("hubert_tiny", layer_drop=1.0).train()
    wav, lengths = padded([4000])
    out = encoder(wav, lengths)
    assert all(torch.equal(state, out.hidden_states[0]) for state in out.hidden_states)
    encoder.eval()
    with torch.no_grad():
        assert not torch.equal(
            encoder(wav, lengths).last_hidden_state, encoder(wav, lengths).hidden_states[0]
        )


def test_build_encoder_specs_and_errors():
    encoder = build_encoder("tpc_tiny", num_layers=3)
    assert encoder.num_layers == 3
    assert build_config(encoder.spec()) == encoder.config
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("hubert_gigantic")
    with pytest.raises(ValueError, match="unknown wav2vec2 encoder config fields"):
        build_encoder("hubert_tiny", num_layer=3)
    with pytest.raises(ValueError, match="expected a waveform batch"):
        build_encoder("hubert_tiny")(torch.zeros(2, 3, 400), torch.tensor([400, 400]))
    with pytest.raises(ValueError, match="lengths must lie"):
        build_encoder("hubert_tiny")(torch.zeros(2, 400), torch.tensor([400, 500]))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_encoder_yaml_composes_to_the_preset(name):
    config = compose(overrides=[f"+encoder={name}"])
    built = build_config(config.encoder)
    assert built == PRESETS[name]()
    assert type(built) in CONFIG_SCHEMAS["encoder"].values()
    assert dataclasses.asdict(built)["family"] == built.family


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_encoder_yaml_is_the_generated_text_of_its_preset(name):
    """conf/encoder/<name>.yaml is written from the Python preset, never by hand."""
    path = CONF_DIR / "encoder" / f"{name}.yaml"
    assert path.exists() and path.read_text() == encoder_preset_yaml(name), (
        f"{path} differs from PRESETS[{name!r}]: run tools/write_encoder_configs.py"
    )


def test_every_encoder_yaml_is_a_python_preset():
    files = {path.stem for path in (CONF_DIR / "encoder").glob("*.yaml")}
    assert files == set(PRESETS), "run tools/write_encoder_configs.py"


def test_masked_group_norm_paths_agree_with_group_norm_on_valid_frames():
    """The eager per-item path and the compile-friendly masked-sum path both equal
    ``F.group_norm`` over each item's valid frames."""
    from speechssl.encoders.wav2vec2.model import ChannelGroupNorm

    norm = ChannelGroupNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 8, 50) * 3 + 1
    lengths = torch.tensor([50, 30, 0])
    padding_mask = torch.arange(50)[None] >= lengths[:, None]
    eager, summed = norm(x, padding_mask), norm._masked_sums(x, padding_mask)
    for index, length in enumerate(lengths.tolist()[:2]):
        expected = torch.nn.functional.group_norm(
            x[index : index + 1, :, :length], 8, norm.weight, norm.bias
        )
        assert torch.allclose(eager[index : index + 1, :, :length], expected, atol=1e-5)
        assert torch.allclose(summed[index : index + 1, :, :length], expected, atol=1e-4)
