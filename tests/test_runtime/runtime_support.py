"""Constants and small helpers shared by the runtime tests (imported explicitly by name; the
matching fixtures — ``clock``, ``db``, ``store``, ``handlers_importable``, ``cli_env`` — live in
``conftest.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from compiler.ir import AgentDef
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # a Monday, 12:00 UTC: the default FakeClock start
S = timedelta(seconds=1)
M = timedelta(minutes=1)
H = timedelta(hours=1)

# the plain python agent that succeeds (``test_scheduler_handlers:ok``)
OK = AgentDef(name="ok", executor="python", handler="test_scheduler_handlers:ok")


class Events(list[tuple[str, dict[str, Any]]]):
    """An ``on_event`` callback that records every scheduler event in order."""

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.append((kind, payload))

    def kinds(self) -> list[str]:
        """The event kinds, in order."""
        return [k for k, _ in self]


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (really, in small steps) for a condition the event loop makes true."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def make_scheduler(store: SqliteStore, clock: FakeClock, **kw: Any) -> Scheduler:
    """A Scheduler with the default config, owner ``t`` and an empty environment unless
    ``env`` is given."""
    kw.setdefault("env", {})
    return Scheduler(store, SchedulerConfig(), clock, owner_id="t", **kw)
