"""Heartbeat runs (SPEC §5.5): assess → act → sleep within one wake-up, iterations recorded,
context per ``context_mode``, the sleep answer, max_iterations, per-iteration timeout, and the
stdlib system_health agent as an offline heartbeat agent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from runtime_support import T0, M, make_scheduler

from compiler.ir import AgentDef, HeartbeatDef, JobDef, SchedulePolicy
from runtime.clock import FakeClock
from runtime.heartbeat import answer_of, is_sleep, iteration_counts, list_iterations
from runtime.store import RunRow, SqliteStore
from stdlib.agents import system_health

HERE = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("handlers_importable")


def agent(handler: str) -> AgentDef:
    return AgentDef(name=handler, executor="python", handler=f"context_handlers:{handler}")


def hb_job(name: str, handler: str, *, input: str = "", mode: str = "ephemeral_with_summary",
           max_iterations: int = 10, iteration_timeout: float | None = None,
           **kw: Any) -> JobDef:
    return JobDef(name=name, agent=handler, cron="*/5 * * * *", input=input,
                  heartbeat=HeartbeatDef(enabled=True, context_mode=mode,
                                         max_iterations=max_iterations,
                                         iteration_timeout_seconds=iteration_timeout), **kw)


async def one_run(store: SqliteStore, clock: FakeClock, name: str) -> RunRow:
    s = make_scheduler(store, clock)
    clock.advance(5 * M)
    await s.run_until_idle()
    runs = [r for r in store.list_runs(name, limit=100) if r.trigger == "schedule"]
    return max(runs, key=lambda r: r.scheduled_for)


def contexts(run: RunRow, store: SqliteStore) -> list[dict[str, Any]]:
    """The context each iteration saw (first line of each iteration's output)."""
    return [json.loads((it.output or "").splitlines()[0]) for it in list_iterations(store, run.id)]


# ------------------------------------------------------------------ the answer


@pytest.mark.parametrize(("output", "answer"), [
    ("sleep", "sleep"),
    ("  Sleep \n", "sleep"),
    ("all good\nload 0.2\n\nsleep\n", "sleep"),
    ('{"action": "sleep"}', "sleep"),
    ('{"action": "SLEEP", "summary": "fine"}', "sleep"),
    ('{"action": "restart nginx"}', "restart nginx"),
    ("sleep\nbut then: restart", "but then: restart"),
    ("I will not sleep", "I will not sleep"),
    ("sleeping", "sleeping"),
    ('{"status": "sleep"}', '{"status": "sleep"}'),  # no action key: its last line is it
    ("", None),
])
def test_the_sleep_answer(output: str, answer: str | None) -> None:
    assert answer_of(output) == answer
    assert is_sleep(output) == (answer == "sleep")


# ------------------------------------------------------------------ the cycle


async def test_iterates_until_the_agent_answers_sleep(store: SqliteStore,
                                                      clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "countdown", input="3")], [agent("countdown")])
    run = await one_run(store, clock, "hb")
    assert (run.status, run.stop_reason, run.error) == ("succeeded", "sleep", None)
    its = list_iterations(store, run.id)
    assert [(i.iteration, i.status, i.action) for i in its] == [
        (1, "succeeded", "act: step 1"), (2, "succeeded", "act: step 2"),
        (3, "succeeded", "sleep")]
    assert its[-1].summary == "iteration 3 done" and run.summary == "iteration 3 done"
    seen = contexts(run, store)
    # ephemeral_with_summary: each iteration a new context with the previous one's summary
    assert [c["summary_in"] for c in seen] == [None, "iteration 1 done", "iteration 2 done"]
    assert all(c["messages"] == [] for c in seen)
    assert [c["memory"]["symbi.heartbeat.iteration"] for c in seen] == ["1", "2", "3"]
    assert all(c["memory"]["symbi.heartbeat"] == "true" for c in seen)
    assert "[iteration 1]" in (run.output or "") and (run.output or "").endswith("sleep")
    assert iteration_counts(store, [run.id, "nope"]) == {run.id: 3}
    # the job sleeps until its next occurrence: one run per wake-up
    assert store.get_job("hb").next_run == T0 + 10 * M  # type: ignore[union-attr]


async def test_shared_persistent_iterations_accumulate_messages(store: SqliteStore,
                                                                clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "countdown", input="3", mode="shared_persistent")],
                 [agent("countdown")])
    run = await one_run(store, clock, "hb")
    seen = contexts(run, store)
    assert [len(c["messages"]) for c in seen] == [0, 2, 4]
    assert seen[2]["messages"][1]["content"].endswith("act: step 1")
    assert seen[2]["messages"][0] == {"role": "user", "content": "3"}


async def test_fully_ephemeral_iterations_carry_nothing(store: SqliteStore,
                                                        clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "countdown", input="3", mode="fully_ephemeral")],
                 [agent("countdown")])
    run = await one_run(store, clock, "hb")
    seen = contexts(run, store)
    assert [(c["summary_in"], c["messages"]) for c in seen] == [(None, [])] * 3


async def test_first_iteration_gets_the_previous_runs_summary(store: SqliteStore,
                                                              clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "countdown", input="2")], [agent("countdown")])
    await one_run(store, clock, "hb")
    run = await one_run(store, clock, "hb")
    assert contexts(run, store)[0]["summary_in"] == "iteration 2 done"


async def test_json_sleep_answer(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "json_sleep")], [agent("json_sleep")])
    run = await one_run(store, clock, "hb")
    assert run.stop_reason == "sleep"
    assert [i.action for i in list_iterations(store, run.id)] == ["restart", "sleep"]


async def test_max_iterations_ends_the_run_with_a_warning(store: SqliteStore,
                                                          clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "never_sleeps", max_iterations=4)], [agent("never_sleeps")])
    run = await one_run(store, clock, "hb")
    assert (run.status, run.stop_reason) == ("succeeded", "max_iterations")
    assert run.error is not None and run.error.startswith("warning: heartbeat stopped after "
                                                          "max_iterations (4)")
    assert "act: keep going" in run.error
    assert len(list_iterations(store, run.id)) == 4
    history = store.list_runs("hb", limit=5)[0]  # what `symbi cron history` shows
    assert history.stop_reason == "max_iterations" and "warning" in (history.error or "")
    j = store.get_job("hb")
    assert j is not None and j.failure_count == 0  # a warning, not a failure


async def test_a_failing_iteration_fails_the_run(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "fail_at", input="2", max_retries=0)], [agent("fail_at")])
    run = await one_run(store, clock, "hb")
    assert (run.status, run.stop_reason) == ("failed", "iteration_failed")
    assert "heartbeat iteration 2" in (run.error or "") and "broke at 2" in (run.error or "")
    assert [i.status for i in list_iterations(store, run.id)] == ["succeeded", "failed"]


async def test_iteration_timeout(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "slow_at", iteration_timeout=0.2, max_retries=0)],
                 [agent("slow_at")])
    t = time.monotonic()
    run = await one_run(store, clock, "hb")
    assert time.monotonic() - t < 5
    assert (run.status, run.stop_reason) == ("timed_out", "iteration_timeout")
    assert [i.status for i in list_iterations(store, run.id)] == ["succeeded", "timed_out"]


async def test_max_runtime_bounds_the_whole_heartbeat(store: SqliteStore,
                                                      clock: FakeClock) -> None:
    store.deploy([hb_job("hb", "slow_at", max_retries=0,
                         policy=SchedulePolicy(max_runtime_seconds=0.3))], [agent("slow_at")])
    t = time.monotonic()
    run = await one_run(store, clock, "hb")
    assert time.monotonic() - t < 5
    assert (run.status, run.stop_reason) == ("timed_out", "timeout")
    assert "max_runtime" in (run.error or "")
    assert len(list_iterations(store, run.id)) == 1  # the second never finished


async def test_a_command_agent_can_be_a_heartbeat_agent(store: SqliteStore,
                                                        clock: FakeClock) -> None:
    store.deploy([JobDef(name="hb", agent="sh", cron="*/5 * * * *",
                         heartbeat=HeartbeatDef(enabled=True))],
                 [AgentDef(name="sh", executor="command", command="echo checked; echo sleep")])
    run = await one_run(store, clock, "hb")
    assert (run.status, run.stop_reason, run.output) == ("succeeded", "sleep", "checked\nsleep\n")


# ------------------------------------------------------------------ system_health


def _snap(mem: float = 40.0, disk: float = 50.0, load: float = 0.5) -> system_health.HealthSnapshot:
    return system_health.HealthSnapshot(
        hostname="h", load=(load, load, load), cpus=2, mem_total=8 << 30,
        mem_available=4 << 30, mem_percent=mem,
        disks=(system_health.DiskUse("/", 100, int(disk), 100 - int(disk), disk),),
        uptime_seconds=3600)


@pytest.fixture
def health_store(store: SqliteStore) -> SqliteStore:
    store.deploy([JobDef(name="health", agent="system_health", cron="*/5 * * * *",
                         heartbeat=HeartbeatDef(enabled=True, max_iterations=3))],
                 [AgentDef(name="system_health", executor="python",
                           handler="stdlib.agents.system_health:run")])
    return store


async def test_system_health_sleeps_when_all_is_clear(health_store: SqliteStore,
                                                      clock: FakeClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_health, "snapshot", lambda cwd=None: _snap())
    run = await one_run(health_store, clock, "health")
    assert (run.status, run.stop_reason) == ("succeeded", "sleep")
    (it,) = list_iterations(health_store, run.id)
    assert it.action == "sleep" and "status        OK" in (it.output or "")
    assert run.summary is not None and run.summary.endswith(": OK")


async def test_system_health_alerts_when_a_threshold_is_crossed(
        health_store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_health, "snapshot", lambda cwd=None: _snap(mem=97.0))
    run = await one_run(health_store, clock, "health")
    assert (run.status, run.stop_reason) == ("succeeded", "max_iterations")
    its = list_iterations(health_store, run.id)
    assert [i.action for i in its] == ["alert: memory 97% used"] * 3


async def test_system_health_on_this_machine(health_store: SqliteStore,
                                             clock: FakeClock) -> None:
    """Really offline, really this machine: the answer matches its own status line."""
    run = await one_run(health_store, clock, "health")
    assert run.status == "succeeded"
    its = list_iterations(health_store, run.id)
    for it in its:
        if (it.summary or "").endswith(": OK"):
            assert it.action == "sleep"
        else:
            assert (it.action or "").startswith("alert: ")
    assert (run.stop_reason == "sleep") == (its[-1].action == "sleep")


def test_system_health_outside_a_heartbeat_has_no_answer_line() -> None:
    from runtime.executor import AgentContext

    out = system_health.run("", AgentContext())["output"]
    assert out.splitlines()[-1].startswith("  status")
