"""No-op job bodies for the scheduler benchmark (importable by reference from a job store).

The APScheduler jobs return the wall-clock instant at which they ran; the benchmark's event
listener reads it from ``JobExecutionEvent.retval``, so no shared recorder is needed (APScheduler's
SQLite store pickles job arguments, which rules out passing one in).
"""

from __future__ import annotations

import time
from typing import Any


async def aps_async_job() -> float:
    """APScheduler coroutine job: runs on the event loop (AsyncIOExecutor), returns its start."""
    return time.time()


def aps_sync_job() -> float:
    """APScheduler plain job: runs in a worker thread (ThreadPoolExecutor), returns its start."""
    return time.time()


def run(input: str, context: Any = None) -> str:
    """symbi python-agent handler that does nothing (the cost measured is the scheduler's)."""
    return ""


def run_inline(input: str, context: Any = None) -> str:
    """Same no-op, marked for the executor's inline fast path (no thread hop) if it has one."""
    return ""


run_inline.symbi_inline = True  # type: ignore[attr-defined]
