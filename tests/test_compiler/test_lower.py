"""Lowering of the examples: a golden text dump of the bundle they compile to."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from compiler.bundle import read_bundle, write_bundle
from compiler.compile import compile_sources, read_source
from compiler.ir import JobDef
from compiler.lower import dump_definitions
from compiler.source import SourceFile

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "tests" / "golden" / "lowered" / "examples.json"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _examples() -> list:
    out = []
    for p in sorted((ROOT / "examples").glob("*.symbi")):
        src, problem = read_source(p, f"examples/{p.name}")
        assert problem is None
        out.append(src)
    return out


def test_examples_lower_to_golden_dump(tmp_path: Path, update_goldens: bool) -> None:
    result = compile_sources(_examples(), mode="compile", now=NOW)
    assert result.errors == 0 and result.warnings == 0, [(d.code, d.message) for d in result.diagnostics]
    bundle = tmp_path / "examples.db"
    write_bundle(bundle, list(result.jobs), list(result.agents), list(result.sources), "golden")
    b = read_bundle(bundle)
    assert b.jobs == list(result.jobs) and b.agents == list(result.agents)
    text = dump_definitions(b.jobs, b.agents)
    if update_goldens:
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_examples_cover_the_seed() -> None:
    names = {j.name for j in compile_sources(_examples(), mode="compile", now=NOW).jobs}
    assert {"daily-report", "deployment-check", "heartbeat-monitor", "data-pipeline", "backup",
            "security-scan", "metrics-report", "production-deploy", "data-sync", "flaky-job",
            "secure-task", "demo-health", "demo-echo"} <= names


def test_lowered_defaults_match_ir_defaults() -> None:
    result = compile_sources([SourceFile("t.symbi", 'schedule s { agent: "echo" cron: "@daily" }')],
                             mode="compile", now=NOW)
    (job,) = result.jobs
    assert job == JobDef(name="s", agent="echo", cron="@daily", source="t.symbi:1")


def test_demo_runs_stdlib_agents_every_few_seconds() -> None:
    src, _ = read_source(ROOT / "examples" / "demo.symbi", "examples/demo.symbi")
    result = compile_sources([src], mode="compile", now=NOW)
    jobs = {j.name: j for j in result.jobs}
    assert jobs["demo-health"].cron == "*/5 * * * * *" and jobs["demo-health"].agent == "system_health"
    assert jobs["demo-health"].delivery == ("stdout",)
    assert jobs["demo-echo"].agent == "echo"
    assert sorted(a.name for a in result.agents) == ["echo", "system_health"]
