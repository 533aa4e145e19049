"""Every config in speechssl/conf composes, is typed by its schema, and instantiates.

The folder is walked, so configs that recipes and other parts add later are covered:
each ``<group>/<option>.yaml`` (groups may nest), each top config ``<name>.yaml`` alone
and with ``debug=tiny``, and every ``# @package _global_`` option on a base config.
"""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from speechssl.config import CONF_DIR, compose, register_configs

SCHEMAS = register_configs()
BASE = ["+trainer=cpu", "+optim=adamw"]  # what a _global_ option such as debug/tiny patches


def _group_options():
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        relative = path.relative_to(CONF_DIR)
        if len(relative.parts) > 1:
            yield pytest.param("/".join(relative.parts[:-1]), path.stem, path, id=str(relative))


def _top_configs():
    return [pytest.param(path.stem, id=path.name) for path in sorted(CONF_DIR.glob("*.yaml"))]


def _is_global(path: Path) -> bool:
    header = path.read_text().splitlines()[:3]  # Hydra reads the package line from the header
    return any(line.replace(" ", "") == "#@package_global_" for line in header)


def _check_typed(cfg) -> None:
    """Every group node that has schemas is a structured config of one of them."""
    instance = OmegaConf.to_object(cfg)  # builds the dataclasses: values are valid
    for group, schemas in SCHEMAS.items():
        if group in cfg:
            assert isinstance(instance[group], tuple(schemas.values())), (
                f"conf/{group}: not typed by a schema; start it with `defaults: [<name>_schema, _self_]`"
            )


def test_the_folder_holds_the_engine_presets():
    options = {(group, name) for group, name, _ in (p.values for p in _group_options())}
    assert {
        ("trainer", "cpu"),
        ("trainer", "gpu"),
        ("trainer", "ddp"),
        ("optim", "adamw"),
        ("debug", "tiny"),
    } <= options


@pytest.mark.parametrize("group, name, path", list(_group_options()))
def test_group_option_composes_and_instantiates(group, name, path):
    if group.endswith("_scale"):  # <recipe>_scale/<name>.yaml: patches that recipe's config
        _check_typed(compose(group.removesuffix("_scale"), [f"scale={name}"]))
        return
    overrides = [*BASE, f"+{group}={name}"] if _is_global(path) else [f"+{group}={name}"]
    _check_typed(compose(overrides=overrides))


@pytest.mark.parametrize("name", _top_configs())
def test_top_config_composes_alone_and_with_debug_tiny(name):
    _check_typed(compose(name))
    try:
        tiny = compose(name, ["debug=tiny"])  # the top config lists `- debug: null`
    except ValueError as error:
        if "debug" not in str(error):
            raise
        tiny = compose(name, ["+debug=tiny"])
    _check_typed(tiny)
    if "trainer" in tiny:
        assert tiny.trainer.max_steps == compose(overrides=[*BASE, "+debug=tiny"]).trainer.max_steps


def test_debug_tiny_shrinks_the_run():
    cfg = compose(overrides=[*BASE, "+debug=tiny"])
    assert cfg.trainer.max_steps <= 10 and cfg.trainer.num_workers == 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_step=3", "Key 'max_step' not in 'TrainerConfig'"),
        ("trainer.max_steps=many", "Value 'many' of type 'str' could not be converted to Integer"),
        ("trainer.precision=fp8", r"Invalid value 'fp8', expected one of \[fp32, bf16, fp16\]"),
        ("optim.schedule=step", "Invalid value 'step'"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_composition(override, message):
    with pytest.raises(ValueError, match=message):
        compose(overrides=[*BASE, override])


def test_torchrun_ranks_get_their_own_hydra_files(monkeypatch):
    """Rank 0 (or a plain run) keeps Hydra's usual names; rank N>0 writes beside them."""
    from speechssl.config import _rank_suffix

    monkeypatch.delenv("RANK", raising=False)
    assert _rank_suffix() == ""
    monkeypatch.setenv("RANK", "0")
    assert _rank_suffix() == ""
    monkeypatch.setenv("RANK", "3")
    assert _rank_suffix() == ".rank3"
