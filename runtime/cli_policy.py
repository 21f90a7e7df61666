"""CLI pieces for approvals, heartbeats and the ``symbi run`` gate (wired into ``runtime.cli``).

- :func:`register` adds ``symbi cron approve RUN_ID`` and ``symbi cron reject RUN_ID
  [--reason …]`` to the ``cron`` group. ``approve`` then makes the run happen like ``symbi cron
  run`` does: a running scheduler picks it up within a tick, otherwise it runs in this process
  (``--no-wait`` only records the approval).
- :func:`heartbeat_lines` renders a heartbeat run's iterations for ``symbi cron status``.
- :func:`run_detail` is the history's OUTPUT / ERROR text (a heartbeat that hit
  ``max_iterations`` shows its warning although it succeeded; an ``llm`` run ends with its
  token counts, :func:`tokens_note`).
- :func:`check_agent_run` is the policy gate of ``symbi run AGENT`` (see
  ``PolicyGate.evaluate_agent_run``: an agent alone has no schedule policy, so only AgentPin
  applies, and only when required globally; the credential comes from ``--agent-pin-jwt`` or
  ``$AGENT_PIN_JWT``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

# imported by ``runtime.cli`` at start-up: the runtime modules load lazily, in the functions
if TYPE_CHECKING:
    from compiler.ir import AgentDef
    from runtime.config import Config
    from runtime.policy import Decision
    from runtime.store import RunRow, SqliteStore

__all__ = ["check_agent_run", "heartbeat_lines", "register", "run_detail", "tokens_note"]

DEFAULT_TOKEN_REF = "${AGENT_PIN_JWT}"
STOP_MAX = "max_iterations"  # runtime.heartbeat.STOP_MAX (not imported: start-up time)


def tokens_note(usage: Mapping[str, Any] | None) -> str:
    """``tokens: 812 in, 154 out`` for an ``llm`` run's usage ('' when it reports none)."""
    if not usage:
        return ""
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if prompt is None and completion is None:
        total = usage.get("total_tokens")
        return f"tokens: {total}" if total is not None else ""
    return f"tokens: {prompt if prompt is not None else '?'} in, " \
           f"{completion if completion is not None else '?'} out"


def run_detail(r: RunRow, width: int | None = None) -> str:
    """The OUTPUT / ERROR text of a run in history tables; with ``width``, one line of at most
    that many characters whose end (the token note) is never cut off."""
    from runtime.output import one_line

    if r.status == "succeeded":
        text = r.error if r.stop_reason == STOP_MAX and r.error else (r.summary or "")
    else:
        text = r.error or r.stop_reason or r.summary or ""
    note = tokens_note(r.usage)
    if width is None:
        return f"{text} · {note}" if note and text else (text or note)
    if not note:
        return one_line(text, width)
    room = width - len(note) - 3
    head = one_line(text, room) if room > 1 else ""
    return f"{head} · {note}" if head else note[:width]


def heartbeat_lines(store: SqliteStore, run: RunRow, *, width: int = 70) -> list[str]:
    """``  iteration N  status  action`` lines of a heartbeat run (empty for other runs)."""
    from runtime.heartbeat import list_iterations
    from runtime.output import one_line

    its = list_iterations(store, run.id)
    if not its:
        return []
    out = [f"Heartbeat run {run.id[:8]}: {len(its)} iteration{'s' * (len(its) != 1)}, "
           f"stopped by {run.stop_reason or '-'}"]
    for it in its:
        ms = None
        if it.finished_at is not None:
            ms = int((it.finished_at - it.started_at).total_seconds() * 1000)
        text = it.action if it.status == "succeeded" else (it.error or it.status)
        out.append(f"  #{it.iteration:<3} {it.status:<10} {'' if ms is None else f'{ms} ms':>9}"
                   f"  {one_line(text or '', width)}")
    return out


async def check_agent_run(config: Config, agent: AgentDef, *, token: str | None = None,
                          store: SqliteStore | None = None,
                          env: Mapping[str, str] | None = None,
                          now: datetime | None = None) -> Decision:
    """The gate of ``symbi run AGENT`` (AgentPin when required globally; else allow).
    ``token`` defaults to ``${AGENT_PIN_JWT}`` (expanded from ``env``)."""
    from runtime.policy import PolicyGate

    gate = PolicyGate.from_config(config, store=store, env=env)
    return await gate.evaluate_agent_run(agent, token=token or DEFAULT_TOKEN_REF,
                                         now=now or datetime.now(UTC))


def register(cron: click.Group) -> None:
    """Add ``approve`` and ``reject`` to the ``symbi cron`` group. Call it from
    ``runtime.cli`` after the group and its helpers are defined."""
    from runtime import cli as base

    @cron.command("approve")
    @click.argument("run_id")
    @click.option("--wait/--no-wait", default=True, show_default=True,
                  help="Wait for the approved run to finish and print its output.")
    @click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300,
                  show_default=True, help="Seconds to wait with --wait.")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                  show_default=True)
    @base.pass_ctx
    def cron_approve(c: Any, run_id: str, wait: bool, timeout: float, fmt: str) -> None:
        """Approve a run that waits for approval (RUN_ID: the id or a unique prefix, as in
        history); it then runs — within a tick of a running scheduler, or here."""
        from runtime.approvals import approve_run
        from runtime.output import to_json
        from runtime.scheduler import run_manual_now

        store = c.store()
        run = base._store_call(approve_run, store, run_id, actor=base._actor())
        click.echo(f"run {run.id} of {run.job_name} approved", err=True)
        if not wait:
            if fmt == "json":
                click.echo(to_json(run.to_dict()))
            return

        final = asyncio.run(run_manual_now(store, c.config.scheduler, run.id, timeout=timeout,
                                           app_config=c.config))
        if final is None:
            raise base.CliError(f"run {run.id} did not finish within {timeout:g}s; see "
                                f"`symbi cron history {run.job_name}`")
        if fmt == "json":
            click.echo(to_json(final.to_dict()))
        elif final.output:
            click.echo(final.output, nl=not final.output.endswith("\n"))
        if final.owner == f"cli:{os.getpid()}":  # it ran here, where no delivery worker runs
            base._deliver_here(c, final)
        if final.status != "succeeded":
            if fmt == "json":
                raise SystemExit(base.EXIT_ERROR)
            raise base.CliError(f"run {final.id} {final.status.replace('_', ' ')}"
                                + (f": {final.error}" if final.error else ""))

    @cron.command("reject")
    @click.argument("run_id")
    @click.option("--reason", default=None, help="Why (recorded in history and the audit log).")
    @click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                  show_default=True)
    @base.pass_ctx
    def cron_reject(c: Any, run_id: str, reason: str | None, fmt: str) -> None:
        """Reject a run that waits for approval: it ends `denied` and does not run."""
        from runtime.approvals import reject_run
        from runtime.output import to_json

        run = base._store_call(reject_run, c.store(), run_id, actor=base._actor(),
                               reason=reason)
        if fmt == "json":
            click.echo(to_json(run.to_dict()))
        else:
            click.echo(f"run {run.id} of {run.job_name} rejected")
