"""Named experiment presets: ``experiment=<recipe>_small`` swaps in a larger encoder and
budget for a recipe, the default keeps the recipe's own values, and debug=tiny still
shrinks either."""

import pytest

from speechssl.config import compose
from speechssl.encoders import PRESETS, build_encoder


def _parameters(encoder_config) -> int:
    return sum(parameter.numel() for parameter in build_encoder(encoder_config).parameters())


@pytest.mark.parametrize("recipe", ["tpc", "hubert_sat"])
def test_small_is_larger_and_longer_than_the_default(recipe):
    default = compose(recipe)
    small = compose(recipe, [f"experiment={recipe}_small"])
    assert _parameters(small.encoder) > 10 * _parameters(default.encoder)
    assert small.trainer.max_steps >= default.trainer.max_steps
    # debug=tiny shrinks the small preset too
    assert compose(recipe, [f"experiment={recipe}_small", "debug=tiny"]).trainer.max_steps == 4


def test_tpc_small_is_the_python_preset_with_the_recipes_normalisation():
    small = compose("tpc", ["experiment=tpc_small"])
    expected = PRESETS["tpc_small"]()
    assert (small.encoder.embed_dim, small.encoder.num_layers) == (
        expected.embed_dim,
        expected.num_layers,
    )
    assert small.encoder.normalization == "global"  # tpc.yaml's, kept under the preset


def test_hubert_small_is_the_mel_input_model_with_a_matching_contrastive_layer():
    small = compose("hubert_sat", ["experiment=hubert_sat_small"])
    assert small.encoder.front_end == "fbank" and small.encoder.num_layers == 6
    assert 1 <= small.objective.contrastive.layer <= small.encoder.num_layers
    # an explicit encoder choice wins over the preset's
    small_tiny = compose("hubert_sat", ["experiment=hubert_sat_small", "encoder=hubert_tiny"])
    assert small_tiny.encoder.num_layers == 2


def test_the_study_preset_runs_every_fraction():
    assert list(compose("tts_pretrain", ["experiment=tts_pretrain_small"]).pretrain.fractions) == [
        0,
        0.125,
        0.25,
        0.5,
        1.0,
    ]
