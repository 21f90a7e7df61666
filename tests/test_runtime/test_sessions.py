"""Session modes (SPEC §5.4) across real consecutive runs and across a restart: a python agent
reports the context it received (``context_handlers:report``/``count``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runtime_support import M, make_scheduler

from compiler.ir import AgentDef, JobDef
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler
from runtime.sessions import (
    TRUNCATED_MARK,
    SessionManager,
    context_size,
    load_session,
    truncate_context,
)
from runtime.store import SqliteStore

HERE = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("handlers_importable")


def agent(name: str, handler: str) -> AgentDef:
    return AgentDef(name=name, executor="python", handler=f"context_handlers:{handler}")


def job(name: str, mode: str, agent_name: str = "report", **kw: Any) -> JobDef:
    return JobDef(name=name, agent=agent_name, cron="* * * * *", session_mode=mode,
                  input=kw.pop("input", name), **kw)


async def minute(s: Scheduler, clock: FakeClock) -> None:
    clock.advance(M)
    await s.run_until_idle()


def seen(store: SqliteStore, name: str) -> list[dict[str, Any]]:
    """What each run of ``name`` received, oldest first."""
    rows = sorted(store.list_runs(name, limit=1000), key=lambda r: r.scheduled_for)
    assert all(r.status == "succeeded" for r in rows), [(r.status, r.error) for r in rows]
    return [json.loads(r.output or "{}") for r in rows]


# ------------------------------------------------------------------ ephemeral_with_summary


async def test_ephemeral_with_summary_carries_the_previous_summary(store: SqliteStore,
                                                                   clock: FakeClock,
                                                                   db: Path) -> None:
    store.deploy([job("e", "ephemeral_with_summary")], [agent("report", "report")])
    s = make_scheduler(store, clock)
    await minute(s, clock)
    await minute(s, clock)
    first, second = seen(store, "e")
    assert first["summary_in"] is None and first["messages"] == [] and first["memory"] == {}
    assert second["summary_in"] == "summary of e" and second["messages"] == []
    # a new input changes the summary the next run gets
    store.update_job("e", job("e", "ephemeral_with_summary", input="other"), actor="t")
    await minute(s, clock)
    assert seen(store, "e")[2]["summary_in"] == "summary of e"
    await minute(s, clock)
    assert seen(store, "e")[3]["summary_in"] == "summary of other"
    assert store.query("SELECT COUNT(*) FROM session_contexts")[0][0] == 0  # nothing stored

    # restart: a new store connection and a new scheduler read the summary from history
    store.close()
    reopened = SqliteStore.open(db, clock=clock)
    try:
        s2 = make_scheduler(reopened, clock)
        await minute(s2, clock)
        assert seen(reopened, "e")[4]["summary_in"] == "summary of other"
    finally:
        reopened.close()


async def test_a_run_without_summary_keeps_the_older_one(store: SqliteStore,
                                                        clock: FakeClock) -> None:
    """The summary carried is the latest run's that has one (an empty run has none)."""
    store.deploy([job("e", "ephemeral_with_summary")], [agent("report", "report"),
                                                         agent("silent", "silent")])
    s = make_scheduler(store, clock)
    await minute(s, clock)
    store.update_job("e", job("e", "ephemeral_with_summary", agent_name="silent"), actor="t")
    await minute(s, clock)
    store.update_job("e", job("e", "ephemeral_with_summary"), actor="t")
    await minute(s, clock)
    assert seen(store, "e")[2]["summary_in"] == "summary of e"


async def test_summaries_cost_no_query_per_run(store: SqliteStore, clock: FakeClock,
                                               db: Path) -> None:
    """The burst path: jobs that never ran need no history read at all; afterwards the
    summary comes from memory. Only a restarted scheduler reads history — once per claim."""
    store.deploy([job(f"j{i}", "ephemeral_with_summary") for i in range(30)],
                 [agent("report", "report")])
    s = make_scheduler(store, clock)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # every SQL statement run
    await minute(s, clock)
    await minute(s, clock)
    store._conn.set_trace_callback(None)
    history_reads = [q for q in statements if "summary FROM runs" in q]
    assert history_reads == []
    assert all(seen(store, f"j{i}")[1]["summary_in"] == f"summary of j{i}" for i in range(30))

    s2 = make_scheduler(store, clock)  # e.g. after a restart: nothing in memory
    store._conn.set_trace_callback(statements.append)
    statements.clear()
    await minute(s2, clock)
    await minute(s2, clock)
    store._conn.set_trace_callback(None)
    assert len([q for q in statements if "summary FROM runs" in q]) == 1  # one bulk read
    assert all(seen(store, f"j{i}")[3]["summary_in"] == f"summary of j{i}" for i in range(30))


# ------------------------------------------------------------------ shared_persistent


async def test_shared_persistent_keeps_one_context_across_runs_and_restarts(
        store: SqliteStore, clock: FakeClock, db: Path) -> None:
    store.deploy([job("p", "shared_persistent", agent_name="count")], [agent("count", "count")])
    s = make_scheduler(store, clock)
    await minute(s, clock)
    await minute(s, clock)
    first, second = seen(store, "p")
    assert first["messages"] == [] and first["memory"] == {}
    assert second["memory"] == {"count": "1"}
    assert [m["role"] for m in second["messages"]] == ["user", "assistant"]
    assert second["messages"][0]["content"] == "p"
    assert json.loads(second["messages"][1]["content"]) == first  # the previous output
    assert second["summary_in"] == "count 1"
    stored = load_session(store, store.get_job("p").id)  # type: ignore[union-attr]
    assert stored is not None and stored.mode == "shared_persistent"
    assert stored.memory == {"count": "2"} and len(stored.messages) == 4
    assert stored.size_bytes == context_size(stored.messages, stored.memory)

    store.close()
    reopened = SqliteStore.open(db, clock=clock)
    try:
        await minute(make_scheduler(reopened, clock), clock)
        third = seen(reopened, "p")[2]
        assert third["memory"] == {"count": "2"} and len(third["messages"]) == 4
        assert third["summary_in"] == "count 2"
    finally:
        reopened.close()


async def test_shared_context_is_capped_oldest_first(store: SqliteStore,
                                                     clock: FakeClock) -> None:
    store.deploy([job("p", "shared_persistent", "tally", input="x" * 300)],
                 [agent("tally", "tally")])
    s = make_scheduler(store, clock, session_max_bytes=2048)
    for _ in range(8):
        await minute(s, clock)
    stored = load_session(store, store.get_job("p").id)  # type: ignore[union-attr]
    assert stored is not None
    assert 0 < stored.size_bytes <= 2048
    runs = sorted(store.list_runs("p", limit=100), key=lambda r: r.scheduled_for)
    # the agent saw the whole (capped) context; the newest exchange is kept, oldest dropped
    told = [int((r.output or "").split()[0]) for r in runs]
    assert told[:4] == [0, 2, 4, 6] and told[-1] == told[-2] < 14
    assert stored.messages[-1] == {"role": "assistant", "content": runs[-1].output}
    assert stored.messages[-2] == {"role": "user", "content": "x" * 300}
    assert all(m["content"] in ("x" * 300, *(r.output for r in runs)) for m in stored.messages)


async def test_session_is_removed_with_its_job(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("p", "shared_persistent")], [agent("report", "report")])
    s = make_scheduler(store, clock)
    await minute(s, clock)
    assert store.query("SELECT COUNT(*) FROM session_contexts")[0][0] == 1
    store.remove_job("p", actor="t")
    assert store.query("SELECT COUNT(*) FROM session_contexts")[0][0] == 0


async def test_the_cap_comes_from_scheduler_session_max_bytes(store: SqliteStore,
                                                             clock: FakeClock,
                                                             tmp_path: Path) -> None:
    """``[scheduler] session_max_bytes`` in symbi.toml caps the stored context of scheduled
    and manual runs, dropping the oldest exchanges first; the default cap keeps them all."""
    from runtime.config import load_config
    from runtime.scheduler import run_manual_now
    from runtime.sessions import DEFAULT_SESSION_MAX_BYTES

    path = tmp_path / "symbi.toml"
    path.write_text("[scheduler]\nsession_max_bytes = 2048\n")
    cfg = load_config(path, env={})
    assert cfg.scheduler.session_max_bytes == 2048
    assert SchedulerConfig().session_max_bytes == DEFAULT_SESSION_MAX_BYTES == 262144
    other = SqliteStore.open(tmp_path / "other.db", clock=clock)
    try:
        for st_ in (store, other):
            st_.deploy([job("p", "shared_persistent", "tally", input="x" * 300)],
                       [agent("tally", "tally")])
        capped = Scheduler(store, cfg.scheduler, clock, owner_id="t", env={}, app_config=cfg)
        roomy = Scheduler(other, SchedulerConfig(), clock, owner_id="t", env={})
        for _ in range(6):
            clock.advance(M)
            await capped.run_until_idle()
            await roomy.run_until_idle()

        def stored(st_: SqliteStore) -> Any:
            s = load_session(st_, st_.get_job("p").id)  # type: ignore[union-attr]
            assert s is not None
            return s

        outputs = [r.output for r in sorted(store.list_runs("p", limit=100),
                                            key=lambda r: r.scheduled_for)]
        assert len(outputs) == 6
        kept = [m["content"] for m in stored(store).messages if m["role"] == "assistant"]
        assert 0 < stored(store).size_bytes <= 2048
        assert 1 <= len(kept) < 6 and kept == outputs[-len(kept):]  # the newest, in order
        # the same six runs under the default cap: every exchange kept (about 3.5 KiB)
        assert len(stored(other).messages) == 12 and stored(other).size_bytes > 2048
    finally:
        other.close()

    # `symbi cron run` (run_manual_now with the configuration) applies the configured cap too
    m = store.request_manual_run("p", input="y" * 1500, actor="t")
    final = await run_manual_now(store, cfg.scheduler, m.id, timeout=10, clock=clock, env={},
                                 app_config=cfg)
    assert final is not None and final.status == "succeeded"
    after = stored(store)
    assert after.size_bytes <= 2048
    assert after.messages[-2:] == [{"role": "user", "content": "y" * 1500},
                                   {"role": "assistant", "content": final.output}]
    assert all(m["content"] != "x" * 300 for m in after.messages)  # older exchanges dropped


# ------------------------------------------------------------------ fully_ephemeral


async def test_fully_ephemeral_carries_nothing(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("f", "fully_ephemeral", agent_name="count")], [agent("count", "count")])
    s = make_scheduler(store, clock)
    for _ in range(3):
        await minute(s, clock)
    assert seen(store, "f") == [{"input": "f", "summary_in": None, "messages": [],
                                 "memory": {}}] * 3
    assert store.query("SELECT COUNT(*) FROM session_contexts")[0][0] == 0


async def test_manual_runs_share_the_session(store: SqliteStore, clock: FakeClock) -> None:
    """`symbi cron run` goes through the same run path: it sees and extends the session."""
    from runtime.scheduler import run_manual_now

    store.deploy([job("p", "shared_persistent", agent_name="count")], [agent("count", "count")])
    await minute(make_scheduler(store, clock), clock)
    r = store.request_manual_run("p", input="by hand", actor="t")
    final = await run_manual_now(store, SchedulerConfig(), r.id, timeout=10, clock=clock, env={})
    assert final is not None and final.status == "succeeded"
    assert json.loads(final.output or "")["memory"] == {"count": "1"}
    stored = load_session(store, store.get_job("p").id)  # type: ignore[union-attr]
    assert stored is not None and stored.messages[-2] == {"role": "user", "content": "by hand"}


# ------------------------------------------------------------------ the cap itself


def test_truncate_keeps_the_newest_messages() -> None:
    msgs = [{"role": "user", "content": f"m{i}" + "a" * 100} for i in range(20)]
    kept, size = truncate_context(msgs, {"k": "v"}, 1000)
    assert size == context_size(kept, {"k": "v"}) <= 1000
    assert kept == msgs[-len(kept):] and len(kept) >= 5
    assert truncate_context(msgs[:2], {}, 10_000) == (msgs[:2], context_size(msgs[:2], {}))


def test_a_single_oversized_message_keeps_its_end() -> None:
    text = "start " + "é" * 5000 + " the end"
    kept, size = truncate_context([{"role": "assistant", "content": text}], {}, 1024)
    assert size <= 1024 and len(kept) == 1
    content = kept[0]["content"]
    assert content.startswith(TRUNCATED_MARK) and content.endswith("é the end")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=12), st.integers(min_value=200, max_value=3000))
def test_truncate_always_fits_and_keeps_a_suffix(contents: list[str], cap: int) -> None:
    msgs = [{"role": "user", "content": c} for c in contents]
    kept, size = truncate_context(msgs, {}, cap)
    assert size == context_size(kept, {}) and size <= max(cap, context_size([], {}))
    if kept and not kept[0]["content"].startswith(TRUNCATED_MARK):
        assert kept == msgs[len(msgs) - len(kept):]


def test_summary_cache_is_bounded(store: SqliteStore) -> None:
    sm = SessionManager(store, cache_size=3)
    for i in range(5):
        sm.note_summary(f"j{i}", f"s{i}")
    assert [sm.knows(f"j{i}") for i in range(5)] == [False, False, True, True, True]
    assert sm.summary_for("j4") == "s4"
