"""The one config converter and the registries built on it: every objective and head
YAML of speechssl/conf becomes its dataclass and its model by name, bad input is one line."""

from dataclasses import dataclass, field

import pytest
import torch
from omegaconf import OmegaConf

from speechssl.config import compose
from speechssl.encoders import build_encoder
from speechssl.heads import HEAD_CONFIGS, HEADS, build_transfer_model, head_config
from speechssl.objectives import (
    OBJECTIVES,
    HubertPretrainModel,
    PredictiveCodingModel,
    build_objective,
    objective_config,
)
from speechssl.train.config import Precision, TrainerConfig
from speechssl.typed import from_registry, to_dataclass, to_plain


@dataclass
class Inner:
    size: int = 2


@dataclass
class Outer:
    name: str = "outer"
    inner: Inner = field(default_factory=Inner)
    rates: list[float] = field(default_factory=lambda: [1.0])


def test_to_dataclass_checks_keys_and_types_and_round_trips_through_to_plain():
    node = OmegaConf.create({"inner": {"size": 5}, "rates": [2, 3]})
    outer = to_dataclass(node, Outer)
    assert outer == Outer(inner=Inner(5), rates=[2.0, 3.0])
    assert to_dataclass(to_plain(outer), Outer) == outer  # dataclass -> dict -> dataclass
    assert to_dataclass(None, Outer) == Outer() and to_dataclass(outer, Outer) is outer
    with pytest.raises(ValueError, match="Key 'sizes' not in 'Inner'") as error:
        to_dataclass({"inner": {"sizes": 5}}, Outer)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="invalid Outer"):
        to_dataclass({"inner": {"size": "five"}}, Outer)


def test_to_plain_resolves_interpolations_and_writes_enums_as_names():
    node = OmegaConf.create({"a": 3, "b": "${a}"})
    assert to_plain(node) == {"a": 3, "b": 3}
    plain = to_plain(TrainerConfig(precision=Precision.bf16))
    assert plain["precision"] == "bf16" and isinstance(plain["early_stopping"], dict)
    assert to_dataclass(plain, TrainerConfig).precision == Precision.bf16
    with pytest.raises(ValueError, match="cannot turn int"):
        to_plain(3)


def test_from_registry_names_unknown_tags_and_fields():
    registry = {"outer": Outer}
    assert from_registry({"name": "outer"}, registry, tag="name", what="thing") == Outer()
    with pytest.raises(
        ValueError, match=r"unknown thing name 'other'; expected one of \['outer'\]"
    ):
        from_registry({"name": "other"}, registry, tag="name", what="thing")
    with pytest.raises(ValueError, match=r"unknown outer thing config fields: \['colour'\]"):
        from_registry({"name": "outer", "colour": 1}, registry, tag="name", what="thing")
    with pytest.raises(ValueError, match="must be a mapping"):
        from_registry("outer", registry, tag="name", what="thing")


@pytest.mark.parametrize(
    ("option", "model_class", "encoder"),
    [
        ("predictive_coding", PredictiveCodingModel, "tpc_tiny"),
        ("hubert", HubertPretrainModel, "hubert_tiny"),
        ("hubert_iter1", HubertPretrainModel, "hubert_tiny"),
        ("unispeech_sat", HubertPretrainModel, "hubert_tiny"),
    ],
)
def test_every_objective_config_builds_its_model_by_name(option, model_class, encoder):
    overrides = [f"+objective={option}"]
    if option == "unispeech_sat":
        overrides.append("objective.contrastive.layer=1")  # Base reads layer 6 of 12
    cfg = compose(overrides=overrides)
    config = objective_config(cfg.objective)
    assert type(config) is OBJECTIVES[config.name][0]
    model = build_objective(cfg.objective, build_encoder(encoder))
    assert type(model) is model_class and model.config == config
    wav, lengths = torch.randn(2, 8000), torch.tensor([8000, 6000])
    if model_class is HubertPretrainModel:
        num_labels = int(8000 * config.label_rate / 16000)
        labels = torch.randint(0, config.num_classes[0], (2, num_labels))
        batch = type("B", (), {"frame_labels": labels, "frame_label_lengths": None})()
    else:
        batch = type("B", (), {})()
    batch.wav, batch.lengths = wav, lengths
    loss, metrics = model.train()(batch)
    assert torch.isfinite(loss) and metrics


@pytest.mark.parametrize(
    "option", ["mean_pool", "attentive_pool", "ecapa", "ecapa_tiny", "linear_probe"]
)
def test_every_head_config_picks_its_schema_and_model_by_kind(option):
    cfg = compose(overrides=[f"+head={option}"])
    config = head_config(cfg.head)
    schema = HEAD_CONFIGS[config.kind]
    assert type(config) is schema
    assert config == to_dataclass(cfg.head, schema)
    if config.kind in HEADS and option != "ecapa":  # the full ECAPA is slow on a CPU
        model = build_transfer_model(config, build_encoder("hubert_tiny"), num_classes=3)
        assert type(model) is HEADS[config.kind][2]


def test_registries_refuse_unknown_names_in_one_line():
    with pytest.raises(ValueError, match="unknown objective name 'mlm'"):
        objective_config({"name": "mlm"})
    with pytest.raises(ValueError, match="unknown head kind 'lstm'"):
        head_config({"kind": "lstm"})
    with pytest.raises(ValueError, match="unknown classifier head config fields"):
        head_config({"kind": "classifier", "pooling_size": 3})
