"""Taking over the lease of a dead scheduler at once (SPEC §4: one scheduler per state file).

A lease holder id is ``host:pid``. When the holder is on this host and its process no longer
exists, a standby takes the lease without waiting for it to expire — in one transaction that
replaces the row only if it still names that holder. A live holder (this process, a sleeping
child) or one on another host keeps its lease until it expires. Real processes give the dead
and live pids; the scheduler runs on a FakeClock that never moves while the takeover happens.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_support import T0, Events, S, until

from compiler.ir import AgentDef, JobDef
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler, lease_holder_is_dead, local_owner_id
from runtime.store import SqliteStore

HOST = os.uname().nodename


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "30"])
    yield p
    if p.poll() is None:
        p.kill()
        p.wait()


def make(store: SqliteStore, clock: FakeClock, events: Events, **kw: Any) -> Scheduler:
    return Scheduler(store, SchedulerConfig(lease_ttl_seconds=60), clock, owner_id="me",
                     on_event=events, env={}, **kw)


def test_holder_liveness() -> None:
    assert local_owner_id() == f"{HOST}:{os.getpid()}"
    assert lease_holder_is_dead(f"{HOST}:{dead_pid()}")
    assert not lease_holder_is_dead(f"{HOST}:{os.getpid()}")  # ourselves
    assert not lease_holder_is_dead(f"{HOST}:1")  # init exists (even if not ours)
    assert not lease_holder_is_dead(f"another-{HOST}:{dead_pid()}")  # cannot check: alive
    for odd in ("victim", f"{HOST}:", f"{HOST}:abc", f"{HOST}:0", f"{HOST}:-5",
                f"{HOST}:{2**80}", None, 42):
        assert not lease_holder_is_dead(odd), odd


def test_sleeping_child_is_alive(sleeper: subprocess.Popen[bytes]) -> None:
    assert not lease_holder_is_dead(f"{HOST}:{sleeper.pid}")
    sleeper.kill()
    sleeper.wait()
    assert lease_holder_is_dead(f"{HOST}:{sleeper.pid}")


def test_take_over_checks_the_holder_in_the_same_transaction(tmp_path: Path) -> None:
    a = SqliteStore.open(tmp_path / "state.db")
    b = SqliteStore.open(tmp_path / "state.db")
    try:
        dead = f"{HOST}:{dead_pid()}"
        assert a.try_acquire_lease(dead, 60, T0)
        assert a.take_over_lease("a", dead, 60, T0)
        assert not b.take_over_lease("b", dead, 60, T0)  # a was first: nothing written
        info = b.lease_info()
        assert info is not None and (info.owner, info.acquired_at) == ("a", T0)
        assert info.expires_at == T0 + 60 * S
        assert not b.take_over_lease("b", "someone-else", 60, T0)
        assert b.lease_info().owner == "a"  # type: ignore[union-attr]
        a.release_lease("a")
        assert not b.take_over_lease("b", "a", 60, T0)  # no row at all
        assert b.lease_info() is None
    finally:
        a.close()
        b.close()


async def test_standby_takes_over_a_dead_holder_at_once(store: SqliteStore,
                                                        clock: FakeClock) -> None:
    store.deploy([JobDef(name="a", agent="ok", cron="0 0 1 1 *")],
                 [AgentDef(name="ok", executor="command", command="true")])
    dead = f"{HOST}:{dead_pid()}"
    assert store.try_acquire_lease(dead, 60, T0)  # valid for another minute
    # the dead scheduler had taken a run: the new holder recovers it at once
    m = store.request_manual_run("a", input="", actor="t")
    assert store.claim_run(m.id, dead) is not None
    events = Events()
    s = make(store, clock, events)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        await until(lambda: "lease_acquired" in events.kinds())
        assert clock.now() == T0  # no waiting for the expiry
        assert "standby" not in events.kinds()
        assert dict(events)["lease_acquired"]["taken_over_from"] == dead
        info = store.lease_info()
        assert info is not None and info.owner == "me" and info.acquired_at == T0
        await until(lambda: store.get_run(m.id).status == "interrupted")  # type: ignore
        r = store.get_run(m.id)
        assert r is not None and r.stop_reason == "crash" and dead in (r.error or "")
    finally:
        stop.set()
        await task


async def test_a_live_holder_keeps_its_lease(store: SqliteStore, clock: FakeClock,
                                             sleeper: subprocess.Popen[bytes]) -> None:
    """A sleeping child holds the lease: the standby waits; once the child is gone, its next
    check (every ttl/3) takes over — still long before the expiry."""
    holder = f"{HOST}:{sleeper.pid}"
    assert store.try_acquire_lease(holder, 60, T0)
    events = Events()
    s = make(store, clock, events)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        await until(lambda: "standby" in events.kinds() and clock.sleeper_count > 0)
        assert not s.holds_lease and store.lease_info().owner == holder  # type: ignore
        clock.advance(20)  # checks again: still alive
        await until(lambda: clock.sleeper_count > 0)
        await asyncio.sleep(0.01)
        assert not s.holds_lease and "lease_acquired" not in events.kinds()
        sleeper.kill()
        sleeper.wait()
        clock.advance(20)  # T0+40s, the lease would run until T0+60s
        await until(lambda: "lease_acquired" in events.kinds())
        assert dict(events)["lease_acquired"]["taken_over_from"] == holder
        assert store.lease_info().owner == "me"  # type: ignore[union-attr]
    finally:
        stop.set()
        await task


async def test_our_own_pid_is_never_taken_over(store: SqliteStore, clock: FakeClock) -> None:
    """Another scheduler object in this very process (its pid is alive): no takeover."""
    holder = f"{HOST}:{os.getpid()}"
    assert store.try_acquire_lease(holder, 60, T0)
    events = Events()
    s = make(store, clock, events, standby=False)
    assert await asyncio.wait_for(s.run(asyncio.Event()), 5) == 1
    assert events.kinds() == ["lease_busy"]
    assert store.lease_info().owner == holder  # type: ignore[union-attr]


async def test_no_standby_mode_also_takes_over_a_dead_holder(store: SqliteStore,
                                                             clock: FakeClock) -> None:
    dead = f"{HOST}:{dead_pid()}"
    assert store.try_acquire_lease(dead, 60, T0)
    events = Events()
    s = make(store, clock, events, standby=False)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        await until(lambda: s.holds_lease)
        assert "lease_busy" not in events.kinds()
    finally:
        stop.set()
        assert await task == 0
    assert store.lease_info() is None  # released on the way out
