"""Token usage of ``llm`` runs (runs.usage): written with the run by the real Scheduler (FakeClock)
and by the ``symbi cron run`` path, summed over a heartbeat's iterations, and shown by the CLI
(``cron history``/``cron status`` JSON, the human history's token note). The model is a scripted
OpenAI-compatible server on 127.0.0.1 (``llm_server``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_support import T0, M

from compiler.ir import AgentDef, HeartbeatDef, JobDef
from runtime.cli import cli
from runtime.cli_policy import run_detail, tokens_note
from runtime.clock import FakeClock
from runtime.config import Config, load_config
from runtime.heartbeat import total_usage
from runtime.scheduler import Scheduler, run_manual_now
from runtime.store import RunRecord, SqliteStore, new_run_id

HERE = Path(__file__).parent

WRITER = AgentDef(name="writer", executor="llm", model="local-model",
                  system_prompt="You write one line.")
SHELL = AgentDef(name="shell", executor="command", command="echo hi")


pytestmark = pytest.mark.usefixtures("cli_env")


def local_config(tmp_path: Path, url: str) -> Config:
    path = tmp_path / "symbi.toml"
    path.write_text(f'[providers.local]\nbase_url = "{url}/v1"\nmodels = ["local-*"]\n')
    return load_config(path, env={})


def usage(prompt: int, completion: int, attempts: int = 1) -> dict[str, object]:
    return {"provider": "local", "model": "local-model", "prompt_tokens": prompt,
            "completion_tokens": completion, "total_tokens": prompt + completion,
            "finish_reason": "stop", "attempts": attempts}


async def test_scheduled_llm_run_records_its_usage(store: SqliteStore, clock: FakeClock,
                                                   db: Path, tmp_path: Path) -> None:
    from llm_server import LlmServer, Reply

    with LlmServer([Reply("A fine line.", 23, 4)]) as srv:
        cfg = local_config(tmp_path, srv.url)
        store.deploy([JobDef(name="poet", agent="writer", cron="* * * * *", input="a line"),
                      JobDef(name="plain", agent="shell", cron="* * * * *")], [WRITER, SHELL])
        s = Scheduler(store, cfg.scheduler, clock, owner_id="t", app_config=cfg, env={})
        clock.advance(M)
        await s.run_until_idle()
    assert srv.user_texts() == ["a line"]
    (run,) = store.list_runs("poet")
    assert (run.status, run.output) == ("succeeded", "A fine line.")
    assert run.usage == usage(23, 4)
    (plain,) = store.list_runs("plain")
    assert plain.status == "succeeded" and plain.usage is None
    # persisted: another connection reads the same JSON column
    other = SqliteStore.open(db)
    try:
        again = other.get_run(run.id)
        assert again is not None and again.usage == usage(23, 4)
        (raw,) = other.query("SELECT usage FROM runs WHERE id = ?", (run.id,))
        assert json.loads(raw[0]) == usage(23, 4)
    finally:
        other.close()


async def test_manual_run_records_usage(store: SqliteStore, clock: FakeClock,
                                        tmp_path: Path) -> None:
    """``symbi cron run`` without a scheduler: the same run path writes the usage."""
    from llm_server import LlmServer, Reply

    with LlmServer([Reply("by hand", 5, 2)]) as srv:
        cfg = local_config(tmp_path, srv.url)
        store.deploy([JobDef(name="poet", agent="writer", cron="0 0 1 1 *")], [WRITER])
        m = store.request_manual_run("poet", input="now", actor="t")
        final = await run_manual_now(store, cfg.scheduler, m.id, timeout=10, clock=clock,
                                     app_config=cfg, env={})
    assert final is not None and final.status == "succeeded"
    assert final.usage == usage(5, 2)


async def test_heartbeat_usage_is_summed_over_iterations(store: SqliteStore, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    from llm_server import LlmServer, Reply

    with LlmServer([Reply("checked disks\nrestart nginx", 100, 20),
                    Reply("all good now\nsleep", 130, 3)]) as srv:
        cfg = local_config(tmp_path, srv.url)
        store.deploy([JobDef(name="hb", agent="writer", cron="*/10 * * * *",
                             heartbeat=HeartbeatDef(enabled=True, max_iterations=5))], [WRITER])
        s = Scheduler(store, cfg.scheduler, clock, owner_id="t", app_config=cfg, env={})
        clock.advance(10 * M)
        await s.run_until_idle()
    (run,) = store.list_runs("hb")
    assert (run.status, run.stop_reason) == ("succeeded", "sleep")
    assert run.usage == {**usage(230, 23, attempts=2), "calls": 2}


def test_total_usage() -> None:
    a = usage(10, 1)
    b = {**usage(0, 0), "prompt_tokens": None, "completion_tokens": 4, "total_tokens": 4,
         "finish_reason": "length"}
    assert total_usage([]) is None and total_usage([None, None]) is None
    assert total_usage([a, None, b]) == {**b, "prompt_tokens": 10, "completion_tokens": 5,
                                         "total_tokens": 15, "attempts": 2, "calls": 2}
    assert total_usage([{"provider": "x"}]) == {"provider": "x", "prompt_tokens": None,
                                                "completion_tokens": None,
                                                "total_tokens": None, "attempts": None,
                                                "calls": 1}


def test_usage_column_round_trip_and_bad_json(store: SqliteStore) -> None:
    store.deploy([JobDef(name="j", agent="shell", cron="0 0 1 1 *")], [SHELL])
    job = store.get_job("j")
    assert job is not None
    m = store.request_manual_run("j", input="", actor="t")
    rec = RunRecord.from_row(m)
    rec.status, rec.usage = "succeeded", {"total_tokens": 3, "model": "m"}
    from runtime.store import WriteBatch

    store.write_batch(WriteBatch(run_updates=[rec]))
    got = store.get_run(m.id)
    assert got is not None and got.usage == {"total_tokens": 3, "model": "m"}
    assert got.to_dict(with_usage=True)["usage"] == {"total_tokens": 3, "model": "m"}
    assert "usage" not in got.to_dict()  # the API's run shape is unchanged
    with store.transaction() as conn:  # a hand-edited column is shown as no usage
        conn.execute("UPDATE runs SET usage = 'not json' WHERE id = ?", (m.id,))
    assert store.get_run(m.id).usage is None  # type: ignore[union-attr]
    # a retry row inserted by the scheduler carries no usage
    retry = RunRecord(id=new_run_id(), job_id=job.id, job_name="j", scheduled_for=T0,
                      trigger="retry", status="pending", created_at=T0, due_at=T0)
    store.write_batch(WriteBatch(guarded_inserts=[retry]))
    assert store.get_run(retry.id).usage is None  # type: ignore[union-attr]


def test_tokens_note_and_history_detail() -> None:
    assert tokens_note(None) == "" and tokens_note({}) == ""
    assert tokens_note(usage(812, 154)) == "tokens: 812 in, 154 out"
    assert tokens_note({"prompt_tokens": None, "completion_tokens": None,
                        "total_tokens": 9}) == "tokens: 9"
    assert tokens_note({"prompt_tokens": 3, "completion_tokens": None}) == "tokens: 3 in, ? out"


async def test_cli_shows_usage(store: SqliteStore, clock: FakeClock, db: Path,
                               tmp_path: Path) -> None:
    from llm_server import LlmServer, Reply

    long_reply = "A rather long first line of the model's answer, " * 4
    with LlmServer([Reply(long_reply, 812, 154)]) as srv:
        cfg = local_config(tmp_path, srv.url)
        store.deploy([JobDef(name="poet", agent="writer", cron="* * * * *")], [WRITER])
        s = Scheduler(store, cfg.scheduler, clock, owner_id="t", app_config=cfg, env={})
        clock.advance(M)
        await s.run_until_idle()
    (run,) = store.list_runs("poet")
    # the note survives the cut to the column width
    detail = run_detail(run, 70)
    assert len(detail) <= 70 and detail.endswith("… · tokens: 812 in, 154 out")
    runner = CliRunner()
    hist = runner.invoke(cli, ["--store", str(db), "cron", "history", "poet", "--format", "json"])
    assert hist.exit_code == 0, hist.output
    (rec,) = json.loads(hist.stdout)
    assert rec["usage"] == usage(812, 154)
    table = runner.invoke(cli, ["--store", str(db), "cron", "history", "poet"])
    assert table.exit_code == 0 and "tokens: 812 in, 154 out" in table.stdout
    status = runner.invoke(cli, ["--store", str(db), "cron", "status", "poet", "--history",
                                 "2", "--format", "json"])
    assert status.exit_code == 0, status.output
    (h,) = json.loads(status.stdout)["history"]
    assert h["usage"] == usage(812, 154) and h["heartbeat_iterations"] == []
    text = runner.invoke(cli, ["--store", str(db), "cron", "status", "poet", "--history", "2"])
    assert "tokens: 812 in, 154 out" in text.stdout
