"""Golden files: rendered diagnostics of tests/golden/diagnostics/*.symbi.

Regenerate with ``pytest tests/test_compiler --update-goldens`` and review the diff.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from compiler.compile import compile_sources
from compiler.render import render
from compiler.source import SourceFile

GOLDEN = Path(__file__).parents[1] / "golden" / "diagnostics"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
INPUTS = sorted(GOLDEN.glob("*.symbi"))


def _check(path: Path) -> list:
    src = SourceFile(f"{path.name}", path.read_text(encoding="utf-8"))
    return list(compile_sources([src], mode="check", now=NOW).diagnostics)


def _compare(path: Path, actual: str, update: bool) -> None:
    if update:
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} is missing; run pytest with --update-goldens"
    assert actual == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden_diagnostics(path: Path, update_goldens: bool) -> None:
    diags = _check(path)
    assert diags, "a golden input must produce diagnostics"
    _compare(path.with_suffix(".full.txt"), render(diags, "full"), update_goldens)
    _compare(path.with_suffix(".json"), render(diags, "json"), update_goldens)


def test_every_golden_input_has_outputs() -> None:
    for p in INPUTS:
        assert p.with_suffix(".full.txt").exists() and p.with_suffix(".json").exists()
    assert len(INPUTS) >= 8
