"""Every config in speechssl/conf composes, is typed by its schema, and instantiates.

The folder is walked, so configs that recipes and other parts add later are covered:
each ``<group>/<option>.yaml`` (groups may nest), each top config ``<name>.yaml`` (a
recipe) with each of its presets (``debug=tiny``, ``experiment=<recipe>_*``, the options
of every other group it lists as ``null``), and every ``# @package _global_`` option on a
base config. Each value of a run has one default and at most one override per preset.
"""

import shutil
import sys
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from speechssl.config import CONF_DIR, compose, register_configs

SCHEMAS = register_configs()
BASE = ["+trainer=cpu", "+optim=adamw"]  # what a _global_ option such as debug/tiny patches
RECIPES = [path.stem for path in sorted(CONF_DIR.glob("*.yaml"))]


def _group_options():
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        relative = path.relative_to(CONF_DIR)
        if len(relative.parts) > 1:
            yield pytest.param("/".join(relative.parts[:-1]), path.stem, path, id=str(relative))


def _is_global(path: Path) -> bool:
    header = path.read_text().splitlines()[:3]  # Hydra reads the package line from the header
    return any(line.replace(" ", "") == "#@package_global_" for line in header)


def _check_typed(cfg, chosen=None) -> None:
    """Every group node that has schemas (of the groups in ``chosen``, a composition's
    choices, when given) is a structured config of one of them."""
    instance = OmegaConf.to_object(cfg)  # builds the dataclasses: values are valid
    for group, schemas in SCHEMAS.items():
        if group in cfg and (chosen is None or group in chosen):
            assert isinstance(instance[group], tuple(schemas.values())), (
                f"conf/{group}: not typed by a schema; start it with `defaults: [<name>_schema, _self_]`"
            )


def _choices(name: str, overrides: list[str]) -> tuple:
    """``(config, {group: option})`` of a composition, Hydra's own groups left out."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(name, overrides=overrides, return_hydra_config=True)
    choices = {
        group: option
        for group, option in cfg.hydra.runtime.choices.items()
        if not group.startswith("hydra") and option is not None
    }
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), choices


def _recipe_of(experiment: str) -> str:
    """The recipe an ``experiment/<recipe>_<name>.yaml`` preset patches (longest prefix)."""
    recipes = [recipe for recipe in RECIPES if experiment.startswith(f"{recipe}_")]
    assert recipes, f"experiment/{experiment}.yaml: the name starts with no recipe's name"
    return max(recipes, key=len)


def _presets(recipe: str) -> list[str]:
    """``group=option`` for each option of the groups the recipe lists as ``null``
    (``debug``, ``experiment`` and recipe-specific ones such as ``ablation``)."""
    defaults = yaml.safe_load((CONF_DIR / f"{recipe}.yaml").read_text())["defaults"]
    presets = []
    for entry in defaults:
        if not isinstance(entry, dict) or list(entry.values()) != [None]:
            continue
        group = next(iter(entry))
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            if group != "experiment" or _recipe_of(path.stem) == recipe:
                presets.append(f"{group}={path.stem}")
    return presets


def _recipe_presets():
    return [
        pytest.param(recipe, preset, id=f"{recipe}-{preset}")
        for recipe in RECIPES
        for preset in [None, *_presets(recipe)]
    ]


def test_the_folder_holds_the_engine_presets():
    options = {(group, name) for group, name, _ in (p.values for p in _group_options())}
    assert {
        ("trainer", "cpu"),
        ("trainer", "gpu"),
        ("trainer", "ddp"),
        ("optim", "adamw"),
        ("debug", "tiny"),
    } <= options
    assert all(f"debug={option}" in _presets(recipe) for recipe in RECIPES for option in ["tiny"])


@pytest.mark.parametrize("group, name, path", list(_group_options()))
def test_group_option_composes_and_instantiates(group, name, path):
    if group == "experiment":  # experiment/<recipe>_<name>.yaml patches that recipe
        _check_typed(*_choices(_recipe_of(name), [f"experiment={name}"]))
        return
    overrides = [*BASE, f"+{group}={name}"] if _is_global(path) else [f"+{group}={name}"]
    _check_typed(*_choices(None, overrides))


@pytest.mark.parametrize("recipe, preset", _recipe_presets())
def test_every_recipe_composes_with_each_of_its_presets(recipe, preset):
    _check_typed(*_choices(recipe, [preset] if preset else []))


@pytest.mark.parametrize("recipe", RECIPES)
def test_debug_tiny_shrinks_every_recipe_and_its_presets(recipe):
    tiny = compose(overrides=[*BASE, "+debug=tiny"]).trainer.max_steps
    for preset in [None, *_presets(recipe)]:
        cfg = compose(recipe, [*([preset] if preset else []), "debug=tiny"])
        assert cfg.trainer.max_steps == tiny and cfg.trainer.num_workers == 0, preset
        if "transfer" in cfg:
            assert cfg.transfer.epochs == 1, preset


def test_debug_tiny_shrinks_the_run():
    cfg = compose(overrides=[*BASE, "+debug=tiny"])
    assert cfg.trainer.max_steps <= 10 and cfg.optim.warmup_steps <= cfg.trainer.max_steps


def _leaves(node, path: str = ""):
    """``(dotted key, value)`` of a YAML file's values (lists are values)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else key)
    elif path:
        yield path, node


def _writers(recipe: str, preset: str | None) -> dict[str, list[tuple[str, object]]]:
    """``{key: [(file, value), ...]}``: the YAML files of a composition that set each key,
    in composition order (group options, the recipe's file, then the preset)."""
    _, choices = _choices(recipe, [preset] if preset else [])
    files = []  # (choice, file, package); "data@transfer.data": data/<option> at transfer.data
    for choice, option in choices.items():
        group, _, package = choice.partition("@")
        path = CONF_DIR / group / f"{option}.yaml"
        if path.exists():  # not a ConfigStore schema
            files.append((group, path, package or ("" if _is_global(path) else group)))
    preset_group = preset.split("=")[0] if preset else None
    ordered = [file for file in files if file[0] != preset_group]
    ordered += [("", CONF_DIR / f"{recipe}.yaml", "")] + [f for f in files if f[0] == preset_group]
    writers: dict[str, list[tuple[str, object]]] = {}
    for _, path, package in ordered:
        for key, value in _leaves(
            yaml.safe_load(path.read_text()) or {}, package.replace("/", ".")
        ):
            writers.setdefault(key, []).append((str(path.relative_to(CONF_DIR)), value))
    return writers


@pytest.mark.parametrize("recipe, preset", _recipe_presets())
def test_each_value_has_one_default_and_at_most_one_override_per_preset(recipe, preset):
    """In a recipe's composition a key is written by at most one group option and the
    recipe's file (its default), and the preset overrides it at most once, with a new
    value: ``trainer.max_steps`` is the recipe's, replaced by ``experiment=...`` or
    ``debug=tiny`` only. A second writer of the same value is a copy to delete."""
    writers = _writers(recipe, preset)
    preset_file = f"{preset.replace('=', '/')}.yaml" if preset else None
    for key, files in writers.items():
        defaults = [(path, value) for path, value in files if path != preset_file]
        assert len(defaults) <= 2, f"{key} is set in {len(defaults)} files: {defaults}"
        values = [value for _, value in files]
        assert all(a != b for a, b in pairwise(values)), (
            f"{key}: a file repeats the value it overrides: {files}"
        )


def test_the_scan_catches_a_copy_and_a_second_override(tmp_path, monkeypatch):
    """A preset that repeats the recipe's value, and a group option + the recipe's file +
    another group's global patch of one key, both fail the rule."""
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "experiment" / "tpc_copy.yaml").write_text(
        "# @package _global_\ntrainer:\n  max_steps: 600\n"  # tpc.yaml's own value
    )
    (conf / "experiment" / "tpc_new.yaml").write_text(
        "# @package _global_\ntrainer:\n  max_steps: 900\n"
    )
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "CONF_DIR", conf)
    assert [path for path, _ in _writers("tpc", "experiment=tpc_new")["trainer.max_steps"]] == [
        "tpc.yaml",
        "experiment/tpc_new.yaml",
    ]
    test_each_value_has_one_default_and_at_most_one_override_per_preset("tpc", "experiment=tpc_new")
    with pytest.raises(AssertionError, match="repeats the value"):
        test_each_value_has_one_default_and_at_most_one_override_per_preset(
            "tpc", "experiment=tpc_copy"
        )
    (conf / "trainer" / "cpu.yaml").write_text(
        (conf / "trainer" / "cpu.yaml").read_text() + "max_steps: 50\n"
    )
    (conf / "optim" / "adamw.yaml").write_text("# @package _global_\ntrainer:\n  max_steps: 70\n")
    with pytest.raises(AssertionError, match="trainer.max_steps is set in 3 files"):
        test_each_value_has_one_default_and_at_most_one_override_per_preset("tpc", None)


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
