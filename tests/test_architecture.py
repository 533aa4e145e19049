"""The house, as a contract: pyproject.toml's import-linter layers hold, every module of
speechssl sits in a layer, and function-local imports of project modules stay rare."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

import speechssl

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(speechssl.__file__).resolve().parent
MAX_LOCAL_IMPORTS = 5  # issue 13: at most five, each saying why


def _contracts() -> list[dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def test_the_import_linter_contracts_hold(monkeypatch, capsys):
    importlinter_cli = pytest.importorskip("importlinter.cli")  # the dev extra
    monkeypatch.chdir(REPO)
    exit_code = importlinter_cli.lint_imports(
        config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True
    )
    report = capsys.readouterr().out
    assert exit_code == 0, report
    assert "0 broken" in report


def test_every_module_of_the_library_sits_in_one_layer():
    (layers,) = [contract["layers"] for contract in _contracts() if contract["type"] == "layers"]
    placed = [name.strip() for layer in layers for name in re.split(r"[|:]", layer)]
    assert len(placed) == len(set(placed)), "a module sits in two layers"
    top_level = {
        f"speechssl.{path.stem if path.is_file() else path.name}"
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").is_file())
    }
    assert top_level - set(placed) == set(), "add new modules to the layers in pyproject.toml"
    assert set(placed) - top_level == set(), "the layers name a module that does not exist"


def _function_local_project_imports() -> list[tuple[str, int, str]]:
    """``(file, line, source line)`` of each import of a speechssl module inside a function."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for function in ast.walk(ast.parse(source)):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom):
                    modules = [node.module or ""] if node.level == 0 else ["speechssl"]
                elif isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                else:
                    continue
                if any(module.split(".")[0] == "speechssl" for module in modules):
                    relative = os.path.relpath(path, PACKAGE.parent)
                    found.append((relative, node.lineno, lines[node.lineno - 1]))
    return found


def test_function_local_imports_of_project_modules_are_few_and_say_why():
    local = _function_local_project_imports()
    assert len(set(local)) == len(local)
    assert len(local) <= MAX_LOCAL_IMPORTS, "\n".join(f"{f}:{n}: {line}" for f, n, line in local)
    for file, number, line in local:
        above = (PACKAGE.parent / file).read_text().splitlines()[number - 2]
        assert "#" in line or above.strip().startswith("#"), f"{file}:{number}: say why"


MAX_RECIPE_LINES = 250  # issue 13: a recipe is wiring; what it needs twice lives in speechssl


@pytest.mark.parametrize(
    "recipe", sorted(REPO.glob("recipes/*/run.py")), ids=lambda path: path.parent.name
)
def test_every_recipe_is_wiring_of_at_most_250_lines(recipe):
    lines = len(recipe.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_RECIPE_LINES, (
        f"{recipe.relative_to(REPO)}: {lines} lines; move code into speechssl/"
    )
