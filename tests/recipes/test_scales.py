"""The `scale` config group: scale=small swaps in a larger encoder and budget for a recipe,
the default (tiny) keeps the recipe's own values, and debug=tiny still shrinks either."""

import pytest

from speechssl.config import compose
from speechssl.encoders import build_encoder


def _parameters(encoder_config) -> int:
    return sum(parameter.numel() for parameter in build_encoder(encoder_config).parameters())


@pytest.mark.parametrize("recipe", ["tpc", "hubert_sat"])
def test_small_is_larger_and_longer_than_the_default(recipe):
    default = compose(recipe)
    small = compose(recipe, ["scale=small"])
    assert _parameters(small.encoder) > 10 * _parameters(default.encoder)
    assert small.trainer.max_steps >= default.trainer.max_steps
    # debug=tiny shrinks the small tier too
    assert compose(recipe, ["scale=small", "debug=tiny"]).trainer.max_steps == 4


def test_hubert_small_is_the_mel_input_model_with_a_matching_contrastive_layer():
    small = compose("hubert_sat", ["scale=small"])
    assert small.encoder.front_end == "fbank" and small.encoder.num_layers == 6
    assert 1 <= small.objective.contrastive.layer <= small.encoder.num_layers
    # an explicit encoder choice wins over the tier's
    assert compose("hubert_sat", ["scale=small", "encoder=hubert_tiny"]).encoder.num_layers == 2
