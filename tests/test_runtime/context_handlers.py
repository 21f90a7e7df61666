"""Python agent handlers for the session, heartbeat and policy tests (run through the real
PythonExecutor as ``context_handlers:<name>``). They report what they received, so the tests
see exactly which context the runtime built."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from runtime.executor import AgentContext


def _seen(input: str, context: AgentContext) -> dict[str, Any]:
    return {"input": input, "summary_in": context.summary_in,
            "messages": [dict(m) for m in context.messages], "memory": dict(context.memory)}


async def report(input: str, context: AgentContext) -> dict[str, str]:
    """Outputs (JSON) the context it received; its summary names the input."""
    return {"output": json.dumps(_seen(input, context)), "summary": f"summary of {input}"}


async def count(input: str, context: AgentContext) -> dict[str, str]:
    """Like ``report``, and increments ``memory["count"]`` (shared sessions keep it)."""
    seen = _seen(input, context)
    context.memory["count"] = str(int(context.memory.get("count", "0")) + 1)
    return {"output": json.dumps(seen), "summary": f"count {context.memory['count']}"}


async def silent(input: str, context: AgentContext) -> str:
    """No output, so no summary."""
    return ""


def _iteration(context: AgentContext) -> int:
    return int(context.memory["symbi.heartbeat.iteration"])


async def countdown(input: str, context: AgentContext) -> dict[str, str]:
    """Heartbeat agent: acts until iteration ``int(input)``, then answers ``sleep``. Its output
    is the context it saw (JSON line) and the answer line."""
    i = _iteration(context)
    answer = "sleep" if i >= int(input) else f"act: step {i}"
    return {"output": json.dumps(_seen(input, context)) + "\n" + answer,
            "summary": f"iteration {i} done"}


async def json_sleep(input: str, context: AgentContext) -> str:
    """Heartbeat agent answering with a JSON object (sleep on the second iteration)."""
    i = _iteration(context)
    return json.dumps({"action": "sleep" if i >= 2 else "restart", "iteration": i})


async def never_sleeps(input: str, context: AgentContext) -> str:
    """Heartbeat agent that always has something to do."""
    return f"still busy ({_iteration(context)})\nact: keep going"


async def fail_at(input: str, context: AgentContext) -> str:
    """Heartbeat agent failing at iteration ``int(input)``."""
    i = _iteration(context)
    if i >= int(input):
        raise RuntimeError(f"broke at {i}")
    return f"fine {i}\nact: go on"


async def slow_at(input: str, context: AgentContext) -> str:
    """Heartbeat agent that hangs (really sleeps 30 s) at iteration 2."""
    i = _iteration(context)
    if i >= 2:
        await asyncio.sleep(30)
    return f"quick {i}\nact: go on"


async def tally(input: str, context: AgentContext) -> str:
    """Says how many messages it received (fixed-size output, for the size cap)."""
    return f"{len(context.messages)} messages\n" + "y" * 200
