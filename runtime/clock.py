"""Time sources for the runtime.

Everything time-dependent in the runtime (the scheduler loop, the store's timestamps, retry
backoff, leases) takes a :class:`Clock`, so tests drive it with :class:`FakeClock` and never
sleep for real. All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of (aware, UTC) time and of sleeping until a deadline."""

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...

    async def sleep_until(self, deadline: datetime, wake: asyncio.Event | None = None) -> None:
        """Return at ``deadline`` or as soon as ``wake`` is set, whichever comes first."""
        ...

    def monotonic(self) -> float:
        """A monotonic seconds counter (for measuring durations)."""
        ...


def ensure_utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime; a naive value is rejected (it is always a bug)."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()} where an aware UTC time is required")
    return dt.astimezone(UTC)


class SystemClock:
    """The real clock: wall time for instants, the event loop for sleeping."""

    def now(self) -> datetime:
        """The current instant (UTC)."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep_until(self, deadline: datetime, wake: asyncio.Event | None = None) -> None:
        """Sleep until ``deadline`` (wall time) or until ``wake`` is set.

        The delay is computed once from the wall clock; callers re-read ``now()`` after waking,
        so a wall-clock step while sleeping costs at most one extra loop iteration.
        """
        delay = (ensure_utc(deadline) - self.now()).total_seconds()
        if wake is not None and wake.is_set():
            return
        if delay <= 0:
            await asyncio.sleep(0)
            return
        if wake is None:
            await asyncio.sleep(delay)
            return
        try:
            async with asyncio.timeout(delay):  # no extra Task per sleep (unlike wait_for)
                await wake.wait()
        except TimeoutError:
            pass


class FakeClock:
    """A manually driven clock for tests.

    ``advance()``/``set()`` move time forward and wake every sleeper whose deadline has passed;
    nothing moves unless the test says so. ``monotonic()`` advances together with ``now()``.
    """

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)
        self._mono = 0.0
        self._seq = itertools.count()
        # (deadline, seq, future); seq keeps heap order stable and avoids comparing futures
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        """The fake current instant."""
        return self._now

    def monotonic(self) -> float:
        """Seconds elapsed on this fake clock since it was created."""
        return self._mono

    def advance(self, delta: float | timedelta) -> datetime:
        """Move time forward by ``delta`` (seconds or timedelta); returns the new time."""
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        return self.set(self._now + delta)

    def set(self, dt: datetime) -> datetime:
        """Move time forward to ``dt`` and wake the sleepers that are due."""
        dt = ensure_utc(dt)
        if dt < self._now:
            raise ValueError(f"FakeClock cannot go back in time ({dt} < {self._now})")
        self._mono += (dt - self._now).total_seconds()
        self._now = dt
        while self._sleepers and self._sleepers[0][0] <= dt:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        return dt

    def next_deadline(self) -> datetime | None:
        """The earliest deadline anyone is sleeping until (None if nobody sleeps)."""
        self._sleepers = [s for s in self._sleepers if not s[2].done()]
        heapq.heapify(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    @property
    def sleeper_count(self) -> int:
        """How many coroutines are currently sleeping on this clock."""
        return sum(1 for s in self._sleepers if not s[2].done())

    async def sleep_until(self, deadline: datetime, wake: asyncio.Event | None = None) -> None:
        """Wait until the fake time reaches ``deadline`` or ``wake`` is set."""
        deadline = ensure_utc(deadline)
        if deadline <= self._now or (wake is not None and wake.is_set()):
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), fut))
        if wake is None:
            try:
                await fut
            finally:
                fut.cancel()
            return
        waiter: asyncio.Future[Any] = asyncio.ensure_future(wake.wait())
        pending: set[asyncio.Future[Any]] = {fut, waiter}
        try:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            fut.cancel()

    async def run_until_idle(self, rounds: int = 20) -> None:
        """Yield to the event loop a few times so woken tasks get to run (no real sleeping)."""
        for _ in range(rounds):
            await asyncio.sleep(0)
