"""What ``symbi up`` prints for a run waiting for approval (a neutral line naming the approve
command, not a failure), and the heartbeat iterations in ``symbi cron status --format json`` —
both fed by the real Scheduler on a FakeClock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_support import OK, T0, M

from compiler.ir import AgentDef, HeartbeatDef, JobDef, SchedulePolicy
from runtime.cli import RunPrinter, cli
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

HERE = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("cli_env")


async def test_up_prints_a_neutral_awaiting_approval_line(db: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    # near the real time: `symbi cron approve` checks the approval's deadline on the real clock
    clock = FakeClock(datetime.now(UTC).replace(second=0, microsecond=0))
    store = SqliteStore.open(db, clock=clock)
    try:
        await _awaiting_line(store, clock, db, capsys)
    finally:
        store.close()


async def _awaiting_line(store: SqliteStore, clock: FakeClock, db: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    store.deploy([JobDef(name="deploy-prod", agent="ok", cron="* * * * *",
                         policy=SchedulePolicy(require_approval=True, approvers=("ops",))),
                  JobDef(name="fine", agent="ok", cron="* * * * *")], [OK])
    printer = RunPrinter(quiet=False, verbose=False, store_path=db, name_width=11)
    printer.fancy = True
    s = Scheduler(store, SchedulerConfig(), clock, owner_id="t", on_event=printer.on_event,
                  env={})
    clock.advance(M)
    await s.run_until_idle()
    out = capsys.readouterr().out
    (waiting,) = store.list_runs("deploy-prod")
    assert waiting.status == "awaiting_approval"
    (line,) = [ln for ln in out.splitlines() if "deploy-prod" in ln]
    assert " ".join(line.split()).endswith(
        f"⏸ deploy-prod awaiting approval — approve with: symbi cron approve {waiting.id[:8]} "
        "(or reject)")
    assert "✗" not in line and "awaiting_approval" not in line
    assert any("✓ fine" in ln for ln in out.splitlines())  # the other job, as before
    # the printed prefix really names the run
    res = CliRunner().invoke(cli, ["--store", str(db), "cron", "approve", waiting.id[:8],
                                   "--no-wait"])
    assert res.exit_code == 0, res.output
    assert store.get_run(waiting.id).status == "pending"  # type: ignore[union-attr]


def test_awaiting_line_without_unicode(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printer = RunPrinter(quiet=False, verbose=False, store_path=db, name_width=8)
    printer.fancy = False
    printer.on_event("run_finished", {"id": "0123456789abcdef", "job_name": "gated",
                                      "status": "awaiting_approval", "trigger": "manual",
                                      "at": T0})
    line = capsys.readouterr().out.splitlines()[-1]
    assert " ".join(line.split()).endswith(
        "= gated awaiting [manual] approval — approve with: symbi cron approve 01234567 "
        "(or reject)")


async def test_status_json_lists_heartbeat_iterations(store: SqliteStore, clock: FakeClock,
                                                      db: Path) -> None:
    store.deploy([JobDef(name="hb", agent="cd", cron="*/10 * * * *", input="2",
                         heartbeat=HeartbeatDef(enabled=True, max_iterations=5)),
                  JobDef(name="plain", agent="ok", cron="*/10 * * * *")],
                 [AgentDef(name="cd", executor="python", handler="context_handlers:countdown"),
                  OK])
    s = Scheduler(store, SchedulerConfig(), clock, owner_id="t", env={})
    for _ in range(2):
        clock.advance(10 * M)
        await s.run_until_idle()
    runner = CliRunner()
    res = runner.invoke(cli, ["--store", str(db), "cron", "status", "hb", "--history", "5",
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    history = json.loads(res.stdout)["history"]
    assert len(history) == 2
    for h in history:
        its = h["heartbeat_iterations"]
        assert [i["iteration"] for i in its] == [1, 2]
        assert [i["action"] for i in its] == ["act: step 1", "sleep"]
        assert all(i["run_id"] == h["id"] and i["status"] == "succeeded" for i in its)
        assert h["stop_reason"] == "sleep"
    plain = json.loads(runner.invoke(cli, ["--store", str(db), "cron", "status", "plain",
                                           "--history", "1", "--format", "json"]).stdout)
    assert plain["history"][0]["heartbeat_iterations"] == []
