"""Executors that cannot run, and derived summaries (SPEC §1.2, §5.4)."""

from __future__ import annotations

import json

import pytest

from compiler.ir import AgentDef
from runtime.executor import (
    ExecRequest,
    ExecResult,
    HttpExecutor,
    UnavailableExecutor,
    derive_summary,
    executor_for,
    run_agent,
)
from runtime.llm import LlmExecutor


async def test_unavailable_executor_fails_truthfully() -> None:
    # llm and http are implemented now (test_executor_llm*.py, test_executor_http*.py); the
    # class stays for executor kinds a build leaves out.
    agent = AgentDef(name="a", executor="quantum")
    r = await UnavailableExecutor("quantum").execute(ExecRequest(agent=agent, input="hi"))
    assert r == ExecResult(
        status="failed", error="executor `quantum` is not available in this version of symbi"
    )


def test_llm_and_http_agents_get_real_executors() -> None:
    assert isinstance(executor_for(AgentDef(name="a", executor="llm")), LlmExecutor)
    assert isinstance(executor_for(AgentDef(name="a", executor="http")), HttpExecutor)


async def test_agent_with_nothing_to_execute() -> None:
    r = await run_agent(AgentDef(name="upstream_only"), "hi")
    assert r == ExecResult(
        status="failed", error="agent `upstream_only` has nothing to execute (agent-not-executable)"
    )


async def test_unknown_executor_name() -> None:
    r = await run_agent(AgentDef(name="odd", executor="quantum"), "")
    assert r == ExecResult(status="failed", error="agent `odd` has unknown executor `quantum`")


def test_executor_instances_are_cached_per_kind() -> None:
    assert executor_for(AgentDef(name="a", executor="llm")) is executor_for(
        AgentDef(name="b", executor="llm")
    )
    assert executor_for(AgentDef(name="a", executor="llm")) is not executor_for(
        AgentDef(name="a", executor="http")
    )


LONG = "x" * 700


@pytest.mark.parametrize(
    ("output", "agent_summary", "expected"),
    [
        ("anything", "own summary", "own summary"),  # the agent's own wins
        ('{"summary": "from json"}', "own", "own"),
        ('{"summary": "from json", "output": "…"}', None, "from json"),
        ('  \n{"summary": "leading space ok"}', None, "leading space ok"),
        ('{"summary": 3}', None, "3"),
        ('{"summary": ""}', None, '{"summary": ""}'),
        ('{"summary": {"nested": 1}}', None, '{"summary": {"nested": 1}}'),
        ('{"no_summary": 1}', None, '{"no_summary": 1}'),
        ("{not json", None, "{not json"),
        ('["summary"]', None, '["summary"]'),
        ("short output", None, "short output"),
        ("short output", "", "short output"),  # empty own summary does not count
        ("", None, ""),
        (LONG, None, "x" * 500),
        ("é" * 600, None, "é" * 500),  # characters, not bytes
    ],
)
def test_derive_summary_table(output: str, agent_summary: str | None, expected: str) -> None:
    assert derive_summary(output, agent_summary) == expected


def test_derive_summary_of_long_json_without_summary_is_truncated() -> None:
    output = json.dumps({"data": "y" * 1000})
    assert derive_summary(output, None) == output[:500]
