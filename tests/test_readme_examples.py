"""The README's code runs as written, and its preset table is the registry's (issue 28)."""

from __future__ import annotations

import re
from pathlib import Path

from speechssl.encoders.catalog import preset_table

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_encoder_snippet_runs_as_written(capsys):
    section = _section("Use an encoder in another project")
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # noqa: S102
    printed = capsys.readouterr().out.strip()
    # the README says what it prints
    assert f"It prints `{printed}`" in section, printed


def test_the_preset_table_is_the_registry_s():
    section = _section("Encoder presets")
    table = re.search(r"<!-- presets:.*?-->\n(.*?)<!-- /presets -->", section, re.DOTALL)
    assert table is not None and table.group(1) == preset_table()
