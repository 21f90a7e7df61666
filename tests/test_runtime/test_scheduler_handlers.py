"""Python agent handlers used by the scheduler tests (run through the real PythonExecutor as
``test_scheduler_handlers:<name>``). They keep no state: what they do comes from the input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


async def ok(input: str, context: Any) -> str:
    """Succeeds, echoing the input."""
    return f"ok:{input}"


def ok_inline(input: str, context: Any) -> str:
    """Sync, cheap, called on the loop (``symbi_inline``)."""
    return "ok"


ok_inline.symbi_inline = True  # type: ignore[attr-defined]


async def fail(input: str, context: Any) -> str:
    """Always fails."""
    raise RuntimeError(f"boom {input}")


async def with_summary(input: str, context: Any) -> dict[str, str]:
    """Returns its own summary."""
    return {"output": "x" * 2000, "summary": "short summary"}


async def long_output(input: str, context: Any) -> str:
    """Output longer than a summary."""
    return "y" * 1200


async def sleep(input: str, context: Any) -> str:
    """Sleeps ``float(input)`` real seconds."""
    await asyncio.sleep(float(input))
    return "slept"


async def wait_file(input: str, context: Any) -> str:
    """Waits (really) until the file named by the input exists: keeps a run in flight until
    the test releases it."""
    path = Path(input)
    while not path.exists():
        await asyncio.sleep(0.002)
    return f"released {path.name}"


async def fail_unless_file(input: str, context: Any) -> str:
    """Fails until the file named by the input exists."""
    if not Path(input).exists():
        raise RuntimeError("not yet")
    return "now it works"


async def record(input: str, context: Any) -> str:
    """Appends the part after ``|`` to the file before it (records the start order)."""
    path, _, name = input.partition("|")
    with open(path, "a", encoding="utf-8") as f:
        f.write(name + "\n")
    return name
