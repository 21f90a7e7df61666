"""Heartbeat runs (SPEC §5.5): assess → act → sleep, repeated within one wake-up.

A job with ``heartbeat { enabled: true }`` runs its agent up to ``max_iterations`` times per
run. Each iteration gets the run's input and a context per ``context_mode``:

- ``ephemeral_with_summary`` (default): a new context whose ``summary_in`` is the previous
  iteration's summary (the first iteration: the run's own context, per the job's
  ``session_mode``);
- ``shared_persistent``: one context for all iterations; each iteration's input and output are
  appended to it as messages;
- ``fully_ephemeral``: a new, empty context per iteration after the first.

The context's ``memory`` tells the agent it is in a heartbeat: ``symbi.heartbeat = "true"``,
``symbi.heartbeat.iteration`` (1-based) and ``symbi.heartbeat.max_iterations`` (these keys are
never persisted).

The run ends when the agent answers **sleep** — an output that is ``sleep``, whose last
non-empty line is ``sleep``, or a JSON object with ``"action": "sleep"`` (case-insensitive) —
with ``stop_reason`` ``sleep``; or after ``max_iterations`` with ``stop_reason``
``max_iterations`` and a warning in the run's ``error`` (the run still ``succeeded``). An
iteration that fails or exceeds ``iteration_timeout`` ends the run ``failed``/``timed_out``
(``stop_reason`` ``iteration_failed``/``iteration_timeout``), retried per the job's policy.

Each iteration is recorded in ``heartbeat_iterations`` as soon as it ends
(:func:`list_iterations` reads them for ``symbi cron status``/``history``). The run's output is
the iterations' outputs, each under an ``[iteration N]`` header when there are several; its
summary is the last iteration's; its token usage (``llm`` agents) the iterations' summed
(:func:`total_usage`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from compiler.ir import HeartbeatDef
from runtime.clock import Clock
from runtime.executor import OUTPUT_CAP_CHARS, AgentContext, ExecResult, derive_summary
from runtime.sessions import (
    EPHEMERAL_WITH_SUMMARY,
    FULLY_EPHEMERAL,
    SHARED_PERSISTENT,
    record_exchange,
)
from runtime.store import SqliteStore, format_ts, parse_ts

__all__ = [
    "HeartbeatOutcome",
    "IterationRecord",
    "answer_of",
    "is_sleep",
    "list_iterations",
    "record_iteration",
    "run_heartbeat",
    "total_usage",
]

MEMORY_FLAG = "symbi.heartbeat"
MEMORY_ITERATION = "symbi.heartbeat.iteration"
MEMORY_MAX = "symbi.heartbeat.max_iterations"
STOP_SLEEP = "sleep"
STOP_MAX = "max_iterations"
STOP_FAILED = "iteration_failed"
STOP_TIMEOUT = "iteration_timeout"
#: How much of an iteration's output is stored in its row (the run keeps the full text).
ITERATION_OUTPUT_CHARS = 64 * 1024
_ACTION_CHARS = 200


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """One iteration of a heartbeat run."""

    run_id: str
    iteration: int
    started_at: datetime
    finished_at: datetime | None
    status: str  # the executor's: succeeded | failed | timed_out
    action: str | None  # "sleep", or what the agent said it does (its last line / JSON action)
    output: str | None
    summary: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape."""
        return {"run_id": self.run_id, "iteration": self.iteration,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "status": self.status, "action": self.action, "output": self.output,
                "summary": self.summary, "error": self.error}


@dataclass
class HeartbeatOutcome:
    """The result of a heartbeat run, for the scheduler to record."""

    result: ExecResult  # status/output/summary/error of the whole run
    stop_reason: str
    iterations: list[IterationRecord] = field(default_factory=list)
    context: AgentContext | None = None  # the context the run ends with (shared sessions)
    messages_recorded: bool = False  # True: the iterations' exchanges are in `context` already


# ------------------------------------------------------------------------------ the answer


def answer_of(output: str) -> str | None:
    """What the agent answered: ``"sleep"``, another action text, or None (no output)."""
    text = output.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and "action" in data:
            action = data["action"]
            if isinstance(action, str) and action.strip().lower() == "sleep":
                return "sleep"
            return str(action)[:_ACTION_CHARS]
    last = text.splitlines()[-1].strip()
    if last.lower() == "sleep":
        return "sleep"
    return last[:_ACTION_CHARS]


def is_sleep(output: str) -> bool:
    """Whether the agent answered sleep (see the module docstring)."""
    return answer_of(output) == "sleep"


# ------------------------------------------------------------------------------ the loop


def _marked(ctx: AgentContext, i: int, hb: HeartbeatDef) -> AgentContext:
    ctx.memory[MEMORY_FLAG] = "true"
    ctx.memory[MEMORY_ITERATION] = str(i)
    ctx.memory[MEMORY_MAX] = str(hb.max_iterations)
    return ctx


def _joined(outputs: list[str]) -> str:
    if len(outputs) == 1:
        return outputs[0]
    text = "\n\n".join(f"[iteration {i}]\n{o.rstrip()}" for i, o in enumerate(outputs, 1))
    if len(text) > OUTPUT_CAP_CHARS:
        text = text[-OUTPUT_CAP_CHARS:]
        text = "[symbi: earlier iterations truncated]\n" + text
    return text


_USAGE_SUMS = ("prompt_tokens", "completion_tokens", "total_tokens", "attempts")


def total_usage(usages: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The usage of a run made of several agent calls: the last call's usage (provider, model,
    finish reason) with the token counts and attempts summed over the calls that report them
    (a count stays None when no call reported it), plus ``calls``. None if no call has any."""
    present = [u for u in usages if u]
    if not present:
        return None
    out = dict(present[-1])
    for key in _USAGE_SUMS:
        values = [u[key] for u in present if isinstance(u.get(key), int)]
        out[key] = sum(values) if values else None
    out["calls"] = len(present)
    return out


Iteration = Callable[[str, AgentContext, float | None], Awaitable[ExecResult]]


async def run_heartbeat(call: Iteration, hb: HeartbeatDef, *, run_id: str, input: str,
                        context: AgentContext, clock: Clock,
                        on_iteration: Callable[[IterationRecord], None] | None = None
                        ) -> HeartbeatOutcome:
    """Run the assess → act → sleep cycle. ``call(input, context, timeout)`` runs the agent
    once (the scheduler's executor call); ``on_iteration`` records each iteration as it ends.
    Cancellation (``max_runtime``, shutdown) propagates out of the current iteration."""
    mode = hb.context_mode
    max_iter = max(1, int(hb.max_iterations))
    ctx = context
    outputs: list[str] = []
    records: list[IterationRecord] = []
    prev_summary: str | None = None
    last: ExecResult | None = None
    usages: list[dict[str, Any] | None] = []
    recorded = False
    for i in range(1, max_iter + 1):
        if i > 1:
            if mode == FULLY_EPHEMERAL:
                ctx = AgentContext()
            elif mode == EPHEMERAL_WITH_SUMMARY:
                ctx = AgentContext(summary_in=prev_summary)
            # shared_persistent: the same context, with the exchanges appended
        _marked(ctx, i, hb)
        started = clock.now()
        res = await call(input, ctx, hb.iteration_timeout_seconds)
        finished = clock.now()
        summary = (derive_summary(res.output, res.summary)
                   if (res.output or res.summary) else None)
        answer = answer_of(res.output) if res.status == "succeeded" else None
        rec = IterationRecord(run_id, i, started, finished, res.status, answer,
                              res.output[:ITERATION_OUTPUT_CHARS] if res.output else res.output,
                              summary, res.error)
        records.append(rec)
        if on_iteration is not None:
            on_iteration(rec)
        outputs.append(res.output)
        usages.append(res.usage)
        last = res
        if mode == SHARED_PERSISTENT:
            record_exchange(ctx, input, res.output)
            recorded = ctx is context
        if res.status != "succeeded":
            stop = STOP_TIMEOUT if res.status == "timed_out" else STOP_FAILED
            return HeartbeatOutcome(
                ExecResult(status=res.status, output=_joined(outputs), summary=summary,
                           error=f"heartbeat iteration {i}: {res.error or res.status}",
                           exit_code=res.exit_code, usage=total_usage(usages)),
                stop, records, ctx, recorded)
        prev_summary = summary
        if answer == "sleep":
            return HeartbeatOutcome(
                ExecResult(status="succeeded", output=_joined(outputs), summary=summary,
                           exit_code=res.exit_code, usage=total_usage(usages)),
                STOP_SLEEP, records, ctx, recorded)
    assert last is not None
    warning = (f"warning: heartbeat stopped after max_iterations ({max_iter}) without the agent "
               f"answering sleep (last answer: {records[-1].action or 'nothing'})")
    return HeartbeatOutcome(
        ExecResult(status="succeeded", output=_joined(outputs), summary=prev_summary,
                   error=warning, exit_code=last.exit_code, usage=total_usage(usages)),
        STOP_MAX, records, ctx, recorded)


# ------------------------------------------------------------------------------ the table


def record_iteration(store: SqliteStore, rec: IterationRecord) -> None:
    """Store one iteration (its own small transaction, so a running heartbeat's progress is
    visible and survives a crash)."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO heartbeat_iterations (run_id, iteration, started_at,"
            " finished_at, status, action, output, summary, error)"
            " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?)",
            (rec.run_id, rec.iteration, format_ts(rec.started_at),
             format_ts(rec.finished_at) if rec.finished_at else None, rec.status, rec.action,
             rec.output, rec.summary, rec.error, rec.run_id))


def list_iterations(store: SqliteStore, run_id: str) -> list[IterationRecord]:
    """The recorded iterations of a run, in order (empty for a non-heartbeat run)."""
    rows = store.query("SELECT run_id, iteration, started_at, finished_at, status, action,"
                       " output, summary, error FROM heartbeat_iterations WHERE run_id = ?"
                       " ORDER BY iteration", (run_id,))
    return [IterationRecord(r[0], r[1], parse_ts(r[2]), parse_ts(r[3]),  # type: ignore[arg-type]
                            r[4], r[5], r[6], r[7], r[8]) for r in rows]


def iteration_counts(store: SqliteStore, run_ids: list[str]) -> dict[str, int]:
    """Number of recorded iterations per run (for history tables)."""
    out: dict[str, int] = {}
    for i in range(0, len(run_ids), 500):
        chunk = run_ids[i:i + 500]
        for rid, n in store.query(
                "SELECT run_id, COUNT(*) FROM heartbeat_iterations WHERE run_id IN"
                f" ({','.join('?' * len(chunk))}) GROUP BY run_id", chunk):
            out[rid] = n
    return out
