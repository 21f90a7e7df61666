"""Property test: parse + validate never raise, whatever is done to a valid file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.compile import compile_sources
from compiler.source import SourceFile

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.symbi"))
TEXTS = [p.read_text(encoding="utf-8") for p in EXAMPLES]
NOW = datetime(2026, 6, 1, tzinfo=UTC)
PIECES = ['"', "{", "}", "[", "]", ":", "=", ",", "\n", "#", "/*", "${", "null", "true", "-1", "30s",
          '"0 25 * * *"', "schedule", "agent", "policy", "cron", "at", "delivery", "heartbeat", "é", "\t"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        insert = draw(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)))
        text = text[:i] + insert + text[j:]
    return text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_check_never_raises(text: str) -> None:
    for mode in ("check", "compile"):
        result = compile_sources([SourceFile("fuzz.symbi", text)], mode=mode, now=NOW)
        for d in result.diagnostics:
            assert 0 <= d.span.start <= d.span.end <= len(text)
