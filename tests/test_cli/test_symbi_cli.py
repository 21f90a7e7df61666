"""`symbi` commands in-process (CliRunner): deploy, cron *, run, audit, config — every format."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from symbi_util import JOBS_SYMBI, Env, snapshot, table_rows

from runtime.config import ENV_VARS
from runtime.store import RUN_COLUMNS

JOB_KEYS = {"id", "name", "agent", "cron", "at", "timezone", "status", "origin", "next_run",
            "last_run", "run_count", "failure_count", "consecutive_failures", "created_at",
            "updated_at", "definition"}
AUDIT_KEYS = {"id", "time", "type", "job_id", "job_name", "run_id", "actor", "details",
              "prev_hash", "hash"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """A clean directory (no symbi.toml, no SYMBI_* variables) and a local zone of +05:30, so
    that local times are visibly not UTC."""
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    src = tmp_path / "jobs.symbi"
    src.write_text(JOBS_SYMBI)
    try:
        yield Env(tmp_path, tmp_path / "state.db", src)
    finally:
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


def jobs_json(env: Env) -> dict[str, dict[str, object]]:
    r = env.symbi("cron", "list", "--format", "json")
    assert r.exit_code == 0, r.output
    return {j["name"]: j for j in json.loads(r.stdout)}


def audit_types(env: Env) -> list[str]:
    r = env.symbi("audit", "query", "--format", "json", "--limit", "1000")
    return [e["type"] for e in reversed(json.loads(r.stdout))]


# ---------------------------------------------------------------- deploy


def test_deploy_bundle_then_redeploy_changes_nothing(env: Env) -> None:
    bundle = env.bundle()
    r = env.symbi("deploy", str(bundle))
    assert r.exit_code == 0
    assert f"deployed {bundle} to {env.db}: 3 jobs (3 created)" in r.stderr
    assert set(jobs_json(env)) == {"greet", "nightly", "fragile"}
    before = snapshot(env.db)
    r = env.symbi("deploy", str(bundle))
    assert r.exit_code == 0 and "3 jobs (3 unchanged)" in r.stderr
    assert snapshot(env.db) == before


def test_deploy_changed_job_keeps_id_and_history(env: Env) -> None:
    env.deployed()
    old = jobs_json(env)["greet"]
    assert env.symbi("cron", "run", "greet").exit_code == 0
    env.src.write_text(JOBS_SYMBI.replace('cron: "0 9 * * 1-5"', 'cron: "0 10 * * 1-5"'))
    r = env.symbi("deploy", str(env.bundle()))
    assert r.exit_code == 0
    assert "3 jobs (1 updated, 2 unchanged)" in r.stderr and "updated:  greet" in r.stderr
    new = jobs_json(env)["greet"]
    assert new["id"] == old["id"] and new["cron"] == "0 10 * * 1-5"
    assert new["run_count"] == 1 and new["next_run"] != old["next_run"]
    assert datetime.fromisoformat(str(new["next_run"])).astimezone(UTC).hour in (8, 9)
    assert len(json.loads(env.symbi("cron", "history", "greet", "--format", "json").stdout)) == 1
    assert audit_types(env).count("CronJobUpdated") == 1


def test_deploy_prune_pause_then_delete_keeps_cli_jobs(env: Env) -> None:
    env.deployed()
    assert env.symbi("cron", "add", "--json",
                     '{"name": "adhoc", "agent": "echo", "cron": "@hourly"}').exit_code == 0
    smaller = env.root / "smaller.symbi"
    smaller.write_text(JOBS_SYMBI.split('schedule {\n  name: "nightly"')[0])
    r = env.symbi("deploy", str(smaller), "--prune=pause")
    # `fragile` comes after `nightly` in the file, so both are missing from `smaller`
    assert r.exit_code == 0 and "2 paused" in r.stderr, r.stderr
    assert "paused:   fragile, nightly" in r.stderr
    jobs = jobs_json(env)
    assert jobs["nightly"]["status"] == "paused" and jobs["fragile"]["status"] == "paused"
    assert jobs["greet"]["status"] == "active" and jobs["adhoc"]["status"] == "active"
    r = env.symbi("deploy", "--prune", str(smaller))  # the flag form, before the path
    assert r.exit_code == 0 and "removed:  fragile, nightly" in r.stderr, r.stderr
    assert set(jobs_json(env)) == {"greet", "adhoc"}


def test_deploy_sources_with_errors_deploys_nothing(env: Env) -> None:
    env.src.write_text(JOBS_SYMBI.replace("30 2 * * *", "30 25 * * *"))
    r = env.symbi("deploy", str(env.src))
    assert r.exit_code == 1
    assert "error[invalid-cron]: hour 25 is out of range 0-23" in r.stderr
    assert "error: compilation failed with 1 error; nothing was deployed" in r.stderr
    assert not env.db.exists()


def test_deploy_missing_input_is_exit_3(env: Env) -> None:
    r = env.symbi("deploy", str(env.root / "nope.symbi"))
    assert r.exit_code == 3 and "no such file or directory" in r.stderr
    assert not env.db.exists()


# ---------------------------------------------------------------- cron list


def test_cron_list_table_is_aligned_with_local_times(env: Env) -> None:
    env.deployed()
    r = env.symbi("cron", "list")
    assert r.exit_code == 0
    rows = table_rows(r.stdout)
    assert rows[0] == ["ID", "NAME", "AGENT", "SCHEDULE", "STATUS", "NEXT RUN", "LAST RUN",
                       "RUNS", "FAILS"]
    by_name = {row[1]: row for row in rows[1:]}
    assert list(by_name) == ["fragile", "greet", "nightly"]  # sorted by name
    greet = by_name["greet"]
    assert greet[2] == "greeter" and greet[3] == "0 9 * * 1-5 (Europe/Berlin)"
    assert greet[4] == "active" and greet[6] == "-" and greet[7] == "0"
    # 09:00 Berlin = 08:00 UTC in winter / 07:00 in summer; shown in the local zone (+05:30)
    next_run = datetime.fromisoformat(jobs_json(env)["greet"]["next_run"])  # type: ignore[arg-type]
    local = next_run.astimezone()
    assert greet[5] == f"{local:%Y-%m-%d %H:%M:%S} +05:30 (in " + greet[5].split("(in ")[1]
    assert local.strftime("%M") in ("30",)  # :00 UTC is :30 in +05:30
    assert all(not line.endswith(" ") for line in r.stdout.splitlines())


def test_cron_list_json_is_complete_and_stable(env: Env) -> None:
    env.deployed()
    data = json.loads(env.symbi("cron", "list", "--format", "json").stdout)
    assert [j["name"] for j in data] == ["fragile", "greet", "nightly"]
    for j in data:
        assert set(j) == JOB_KEYS
        assert j["id"].startswith("job_") and j["origin"] == "bundle"
        assert datetime.fromisoformat(j["next_run"]).tzinfo is not None
    greet = next(j for j in data if j["name"] == "greet")
    assert greet["definition"]["input"] == "world" and greet["timezone"] == "Europe/Berlin"
    again = env.symbi("cron", "list", "--format", "json").stdout
    assert again == env.symbi("cron", "list", "--format", "json").stdout


def test_cron_list_csv_has_raw_values(env: Env) -> None:
    env.deployed()
    r = env.symbi("cron", "list", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["name"] for row in rows] == ["fragile", "greet", "nightly"]
    assert set(rows[0]) == JOB_KEYS - {"definition"}
    assert datetime.fromisoformat(rows[1]["next_run"]) == datetime.fromisoformat(
        jobs_json(env)["greet"]["next_run"])  # type: ignore[arg-type]
    assert rows[0]["last_run"] == "" and rows[0]["run_count"] == "0"


def test_cron_list_filters(env: Env) -> None:
    env.deployed()
    r = env.symbi("cron", "list", "--agent", "echo", "--format", "json")
    assert [j["name"] for j in json.loads(r.stdout)] == ["nightly"]
    env.symbi("cron", "pause", "greet")
    r = env.symbi("cron", "list", "--status", "paused")
    assert [row[1] for row in table_rows(r.stdout)[1:]] == ["greet"]
    assert table_rows(r.stdout)[1][5] == "-"  # a paused job has no next run
    r = env.symbi("cron", "list", "--status", "dead_letter")
    assert r.exit_code == 0 and r.stdout == "No jobs match.\n"
    r = env.symbi("cron", "list", "--status", "sleeping")
    assert r.exit_code == 2 and "'sleeping' is not one of" in r.stderr


# ---------------------------------------------------------------- cron add


def test_cron_add_from_file_adds_job_and_agent(env: Env) -> None:
    extra = env.root / "extra.symbi"
    extra.write_text('agent "shouter" {\n  command: "echo HEY"\n}\n\n'
                     'schedule {\n  name: "shout"\n  agent: "shouter"\n  cron: "*/15 * * * *"\n}\n'
                     'schedule {\n  name: "other"\n  agent: "echo"\n  cron: "@daily"\n}\n')
    r = env.symbi("cron", "add", "--file", str(extra), "--schedule", "shout")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("created job shout (job_") and "next run: " in r.stdout
    jobs = jobs_json(env)
    assert set(jobs) == {"shout"} and jobs["shout"]["origin"] == "cli"
    r = env.symbi("cron", "run", "shout")
    assert r.exit_code == 0 and r.stdout == "HEY\n"
    assert audit_types(env)[0] == "CronJobCreated"


def test_cron_add_file_unknown_schedule_suggests(env: Env) -> None:
    r = env.symbi("cron", "add", "--file", str(env.src), "--schedule", "gret")
    assert r.exit_code == 1 and "no schedule named `gret` (did you mean `greet`?)" in r.stderr
    assert not env.db.exists()


@pytest.mark.parametrize("spec", [
    {"name": "quick-task", "agent_id": "echo", "cron_expr": "0 * * * *"},
    {"name": "quick-task", "agent_name": "echo", "cron_expression": "0 * * * *"},
    {"name": "quick-task", "agent": "echo", "cron": "0 * * * *"},
])
def test_cron_add_json_accepts_seed_sdk_and_symbi_names(env: Env, spec: dict[str, str]) -> None:
    r = env.symbi("cron", "add", "--json", json.dumps(spec))
    assert r.exit_code == 0, r.output
    job = jobs_json(env)["quick-task"]
    assert job["agent"] == "echo" and job["cron"] == "0 * * * *" and job["origin"] == "cli"
    # the stdlib agent was stored with the job, so the job can run
    r = env.symbi("cron", "run", "quick-task", "--input", "ping")
    assert r.exit_code == 0 and r.stdout == "ping\n"


def test_cron_add_json_from_stdin_with_options(env: Env) -> None:
    spec = {"name": "berlin", "agent": "echo", "cron": "0 9 * * *", "timezone": "Europe/Berlin",
            "input": "guten morgen", "max_retries": 1, "retry_backoff": "10s",
            "catchup": "skip", "delivery": ["stdout"]}
    r = env.symbi("cron", "add", "--json", "-", input=json.dumps(spec))
    assert r.exit_code == 0, r.output
    d = jobs_json(env)["berlin"]["definition"]
    assert d["timezone"] == "Europe/Berlin" and d["retry_backoff_seconds"] == 10.0  # type: ignore[index]
    assert d["catchup"] == "skip" and d["max_retries"] == 1  # type: ignore[index]


def test_cron_add_json_policy_and_heartbeat(env: Env) -> None:
    spec = {"name": "guarded", "agent": "echo", "cron": "*/5 * * * *",
            "policy": {"max_runtime": "2m", "allowed_environments": ["prod"],
                       "allowed_hours": {"start": "22:00", "end": "06:00"}},
            "heartbeat": {"max_iterations": 5, "context_mode": "fully_ephemeral"}}
    r = env.symbi("cron", "add", "--json", json.dumps(spec))
    assert r.exit_code == 0, r.output
    d = jobs_json(env)["guarded"]["definition"]
    assert d["policy"]["max_runtime_seconds"] == 120.0  # type: ignore[index]
    assert d["policy"]["allowed_environments"] == ["prod"]  # type: ignore[index]
    assert d["policy"]["allowed_hours"] == {"start": "22:00", "end": "06:00",  # type: ignore[index]
                                            "timezone": "UTC"}
    assert d["heartbeat"]["max_iterations"] == 5  # type: ignore[index]
    r = env.symbi("cron", "add", "--json", json.dumps(
        {**spec, "name": "bad-policy", "policy": {"approvers": "ops", "require_approval": 1}}))
    assert r.exit_code == 2
    assert "`policy.approvers`: expected a list of strings" in r.stderr
    assert "`policy.require_approval`: expected true or false, got a number" in r.stderr


def test_cron_add_duplicate_name_changes_nothing(env: Env) -> None:
    env.deployed()
    before = snapshot(env.db)
    r = env.symbi("cron", "add", "--json", '{"name": "greet", "agent": "echo", "cron": "@daily"}')
    assert r.exit_code == 1 and "a job named `greet` already exists" in r.stderr
    assert snapshot(env.db) == before


def test_cron_add_json_invalid_cron_shows_field_and_caret(env: Env) -> None:
    env.deployed()
    before = snapshot(env.db)
    r = env.symbi("cron", "add", "--json",
                  '{"name": "bad", "agent_id": "echo", "cron_expr": "0 9 * * 1-9"}')
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert lines[0] == "error: --json: invalid job definition:"
    assert lines[1] == "  `cron`: day-of-week 9 is out of range 0-7"
    expr_line, caret_line = lines[2], lines[3]
    assert expr_line.strip() == "0 9 * * 1-9"
    assert caret_line.index("^") == expr_line.index("1-9") + 2  # under the 9
    assert caret_line.strip() == "^"
    assert snapshot(env.db) == before


def test_cron_add_json_reports_every_problem(env: Env) -> None:
    r = env.symbi("cron", "add", "--json", json.dumps({
        "name": "x y", "agent": "echo", "cron": "@daily", "timezone": "Mars/Olympus",
        "max_retrys": 2, "delivery": ["stdot"], "catchup": "some"}))
    assert r.exit_code == 2
    err = r.stderr
    assert "unknown field `max_retrys` (did you mean `max_retries`?)" in err
    assert "`timezone`: 'Mars/Olympus' is not an IANA time zone name" in err
    assert "`delivery`: unknown channel 'stdot' (did you mean 'stdout'?)" in err
    assert "`catchup`: expected one of skip, latest, all, got 'some'" in err
    assert "`name`: 'x y' must match" in err
    assert not env.db.exists()


def test_cron_add_json_syntax_error_and_usage_errors(env: Env) -> None:
    r = env.symbi("cron", "add", "--json", '{"name": "x",')
    assert r.exit_code == 2 and "--json: invalid JSON at line 1 column" in r.stderr
    r = env.symbi("cron", "add", "--json", "{}", "--file", str(env.src))
    assert r.exit_code == 2 and "give either --file" in r.stderr
    r = env.symbi("cron", "add", "--file", str(env.src))
    assert r.exit_code == 2 and "--file needs --schedule NAME" in r.stderr
    r = env.symbi("cron", "add", "--json", json.dumps({"name": "x", "agent": "echo",
                                                        "at": "2001-01-01T00:00:00Z"}))
    assert r.exit_code == 2 and "is in the past" in r.stderr
    assert not env.db.exists()


def test_cron_add_at_job_reads_a_naive_time_in_its_zone(env: Env) -> None:
    r = env.symbi("cron", "add", "--json", json.dumps({
        "name": "once", "agent": "echo", "at": "2030-01-01T09:00:00",
        "timezone": "Europe/Berlin"}))
    assert r.exit_code == 0, r.output
    job = jobs_json(env)["once"]
    assert job["at"] == "2030-01-01T08:00:00+00:00" and job["next_run"] == job["at"]
    row = table_rows(env.symbi("cron", "list").stdout)[1]
    assert row[3] == "at 2030-01-01 13:30:00 +05:30"  # 08:00 UTC in the local zone
    status = env.symbi("cron", "status", "once").stdout
    assert "Schedule: at 2030-01-01 13:30:00 +05:30" in status and "Meaning:  once" in status


def test_cron_add_unknown_agent_warns(env: Env) -> None:
    r = env.symbi("cron", "add", "--json", '{"name": "lonely", "agent": "ghost", "cron": "@daily"}')
    assert r.exit_code == 0
    assert "warning: agent `ghost` is not defined" in r.stderr


# ---------------------------------------------------------------- remove / pause / resume / reset


@pytest.mark.parametrize("how", ["id", "name", "--name"])
def test_cron_remove(env: Env, how: str) -> None:
    env.deployed()
    env.symbi("cron", "run", "greet")
    job_id = jobs_json(env)["greet"]["id"]
    args = {"id": [job_id], "name": ["greet"], "--name": ["--name", "greet"]}[how]
    r = env.symbi("cron", "remove", *args)  # stdin is not a terminal: no question
    assert r.exit_code == 0 and r.stdout == f"removed job greet ({job_id})\n"
    assert "greet" not in jobs_json(env)
    with sqlite3.connect(env.db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE job_id = ?", (job_id,)).fetchone() == (0,)
    assert audit_types(env)[-1] == "CronJobDeleted"


def test_cron_remove_usage(env: Env) -> None:
    env.deployed()
    before = snapshot(env.db)
    assert env.symbi("cron", "remove").exit_code == 2
    r = env.symbi("cron", "remove", "greet", "--name", "greet")
    assert r.exit_code == 2 and "give the job as JOB" in r.stderr
    r = env.symbi("cron", "remove", "--name", jobs_json(env)["greet"]["id"])  # type: ignore[arg-type]
    assert r.exit_code == 1 and "no job named" in r.stderr
    assert snapshot(env.db) == before


def test_pause_resume(env: Env) -> None:
    env.deployed()
    r = env.symbi("cron", "pause", "nightly")
    assert r.exit_code == 0 and r.stdout.startswith("paused job nightly (job_")
    assert jobs_json(env)["nightly"]["status"] == "paused"
    r = env.symbi("cron", "pause", "nightly")
    assert r.exit_code == 0 and "is already paused" in r.stdout
    r = env.symbi("cron", "resume", "nightly")
    assert r.exit_code == 0 and "resumed; next run " in r.stdout and "+05:30 (in " in r.stdout
    job = jobs_json(env)["nightly"]
    assert job["status"] == "active"
    nxt = datetime.fromisoformat(job["next_run"])  # type: ignore[arg-type]
    assert (nxt.hour, nxt.minute) == (2, 30) and nxt > datetime.now(UTC)
    assert audit_types(env)[-2:] == ["CronJobPaused", "CronJobResumed"]
    assert "is already active" in env.symbi("cron", "resume", "nightly").stdout


def test_dead_letter_then_reset(env: Env) -> None:
    env.deployed()
    r = env.symbi("cron", "run", "fragile")
    assert r.exit_code == 1 and "failed: exit status 3" in r.stderr and "boom" in r.stderr
    job = jobs_json(env)["fragile"]
    assert job["status"] == "dead_letter" and job["failure_count"] == 1
    r = env.symbi("cron", "resume", "fragile")
    assert r.exit_code == 1 and "use `symbi cron reset`" in r.stderr
    r = env.symbi("cron", "list")
    assert "1 job in dead_letter" in r.stderr
    r = env.symbi("cron", "reset", "fragile")
    assert r.exit_code == 0 and "dead_letter → active, failure count 0" in r.stdout
    job = jobs_json(env)["fragile"]
    assert job["status"] == "active" and job["failure_count"] == 0 and job["next_run"]
    assert audit_types(env)[-3:] == ["CronJobFailed", "CronJobDeadLettered", "CronJobReset"]


# ---------------------------------------------------------------- status


def test_cron_status_text(env: Env) -> None:
    env.deployed()
    env.symbi("cron", "run", "greet", "--input", "A")
    env.symbi("cron", "run", "greet", "--input", "B")
    r = env.symbi("cron", "status", "greet", "--history", "5")
    assert r.exit_code == 0
    out = r.stdout
    fields = dict(line.split(":", 1) for line in out.split("\n\n")[0].splitlines())
    assert fields["Agent"].strip() == "greeter"
    assert fields["Meaning"].strip() == "at 09:00 on Monday to Friday (Europe/Berlin)"
    assert fields["Runs"].strip() == "2 (0 failed, 0 in a row)"
    assert fields["Next run"].strip().endswith(")") and "+05:30 (in " in fields["Next run"]
    assert fields["Then"].count("+05:30") == 2
    assert "Last 2 runs:" in out
    history = table_rows(out.split("Last 2 runs:\n")[1])
    assert history[0] == ["SCHEDULED", "STATUS", "TRIGGER", "TRY", "DURATION", "OUTPUT / ERROR"]
    assert [h[5] for h in history[1:]] == ["hello B", "hello A"]  # newest first
    assert all(h[1] == "succeeded" and h[2] == "manual" for h in history[1:])


def test_cron_status_json(env: Env) -> None:
    env.deployed()
    env.symbi("cron", "run", "nightly", "--input", "x")
    data = json.loads(env.symbi("cron", "status", "nightly", "--format", "json",
                                "--history", "3").stdout)
    assert set(data) == JOB_KEYS | {"next_runs", "history"}
    times = [datetime.fromisoformat(t) for t in data["next_runs"]]
    assert len(times) == 5 and times[0] == datetime.fromisoformat(data["next_run"])
    assert all(b - a == timedelta(days=1) for a, b in zip(times, times[1:], strict=False))
    assert [h["input"] for h in data["history"]] == ["x"]
    assert set(data["history"][0]) == set(RUN_COLUMNS) | {"deliveries", "usage",
                                                          "heartbeat_iterations"}
    assert data["history"][0]["usage"] is None  # a command run reports no tokens
    assert data["history"][0]["heartbeat_iterations"] == []
    plain = json.loads(env.symbi("cron", "status", "nightly", "--format", "json").stdout)
    assert plain["history"] == []


# ---------------------------------------------------------------- run / history


def test_cron_run_input_and_formats(env: Env) -> None:
    env.deployed()
    r = env.symbi("cron", "run", "greet")
    assert r.exit_code == 0 and r.stdout == "hello world\n"
    r = env.symbi("cron", "run", "greet", "--input", "you", "--format", "json")
    assert r.exit_code == 0
    run = json.loads(r.stdout)
    assert set(run) == set(RUN_COLUMNS) | {"usage"}
    assert run["status"] == "succeeded" and run["output"] == "hello you"
    assert run["trigger"] == "manual" and run["input"] == "you" and run["attempt"] == 1
    r = env.symbi("cron", "run", "greet", "--no-wait")
    assert r.exit_code == 0 and "requested" in r.stdout
    pending = json.loads(env.symbi("cron", "history", "greet", "--status", "pending",
                                   "--format", "json").stdout)
    assert len(pending) == 1 and pending[0]["owner"] is None


def test_cron_history_table_json_csv(env: Env) -> None:
    env.deployed()
    env.symbi("cron", "run", "greet", "--input", "one")
    env.symbi("cron", "run", "fragile")
    env.symbi("cron", "run", "nightly", "--input", "two")
    r = env.symbi("cron", "history")
    rows = table_rows(r.stdout)
    assert rows[0] == ["JOB", "RUN ID", "SCHEDULED", "STARTED", "TRIGGER", "TRY", "STATUS",
                       "DURATION", "OUTPUT / ERROR"]
    assert [(x[0], x[6], x[8]) for x in rows[1:]] == [
        ("nightly", "succeeded", "two"), ("fragile", "failed", "exit status 3: boom"),
        ("greet", "succeeded", "hello one")]
    assert all("+05:30" in x[2] and "+05:30" in x[3] for x in rows[1:])
    r = env.symbi("cron", "history", "greet")
    assert table_rows(r.stdout)[0][0] == "RUN ID"  # one job: no JOB column
    data = json.loads(env.symbi("cron", "history", "--format", "json", "--limit", "2").stdout)
    assert [d["job_name"] for d in data] == ["nightly", "fragile"]
    assert all(set(d) == set(RUN_COLUMNS) | {"deliveries", "usage"} for d in data)
    failed = json.loads(env.symbi("cron", "history", "--status", "failed", "--format",
                                  "json").stdout)
    assert [(d["job_name"], d["exit_code"]) for d in failed] == [("fragile", 3)]
    rows = list(csv.DictReader(io.StringIO(env.symbi("cron", "history", "--format", "csv").stdout)))
    assert len(rows) == 3 and "output" not in rows[0]
    assert set(rows[0]) == set(RUN_COLUMNS) - {"output"} | {"usage"}
    assert rows[0]["job_name"] == "nightly" and rows[0]["input"] == "two"
    assert env.symbi("cron", "history", "nightly", "--status", "missed").stdout == "No runs.\n"


# ---------------------------------------------------------------- symbi run AGENT


def test_run_agent_from_stdlib_file_and_store(env: Env) -> None:
    r = env.symbi("run", "echo", "--input", "hi there")
    assert r.exit_code == 0 and r.stdout == "hi there\n"
    assert not env.db.exists()  # running an agent records nothing
    r = env.symbi("run", "greeter", "--file", str(env.src), "--input", "file")
    assert r.exit_code == 0 and r.stdout == "hello file\n"
    env.deployed()
    r = env.symbi("run", "greeter", "--input", "store", "--format", "json")
    assert json.loads(r.stdout)["output"] == "hello store"
    r = env.symbi("run", "failer")
    assert r.exit_code == 1 and "error: agent `failer` failed: exit status 3" in r.stderr
    r = env.symbi("run", "ghost")
    assert r.exit_code == 1 and "no agent named `ghost`" in r.stderr


# ---------------------------------------------------------------- audit


def test_audit_query_and_verify(env: Env) -> None:
    env.deployed()
    env.symbi("cron", "pause", "greet")
    r = env.symbi("audit", "query")
    rows = table_rows(r.stdout)
    assert rows[0] == ["ID", "TIME", "TYPE", "JOB", "ACTOR", "DETAILS"]
    assert [x[2] for x in rows[1:]] == ["CronJobPaused"] + ["CronJobCreated"] * 3
    assert rows[1][3] == "greet" and rows[1][4].startswith("cli:") and "+05:30" in rows[1][1]
    assert "from=active" in rows[1][5]
    data = json.loads(env.symbi("audit", "query", "--type", "CronJobCreated", "--format",
                                "json").stdout)
    assert len(data) == 3 and all(set(e) == AUDIT_KEYS for e in data)
    data = json.loads(env.symbi("audit", "query", "--job", "greet", "--format", "json").stdout)
    assert [e["type"] for e in data] == ["CronJobPaused", "CronJobCreated"]
    assert env.symbi("audit", "query", "--since", "2999-01-01").stdout == "No audit events.\n"
    assert env.symbi("audit", "query", "--until", "2000-01-01").stdout == "No audit events.\n"
    assert len(json.loads(env.symbi("audit", "query", "--since", "1h", "--format",
                                    "json").stdout)) == 4
    rows = list(csv.DictReader(io.StringIO(env.symbi("audit", "query", "--format", "csv",
                                                     "--limit", "1").stdout)))
    assert len(rows) == 1 and json.loads(rows[0]["details"]) == {"from": "active"}
    r = env.symbi("audit", "verify")
    assert r.exit_code == 0 and r.stdout == "audit chain ok: 4 events verified\n"
    assert json.loads(env.symbi("audit", "verify", "--format", "json").stdout)["ok"] is True


def test_audit_bad_flags(env: Env) -> None:
    env.deployed()
    r = env.symbi("audit", "query", "--type", "CronJobCreate")
    assert r.exit_code == 2 and "did you mean CronJobCreated?" in r.stderr
    r = env.symbi("audit", "query", "--since", "yesterday-ish")
    assert r.exit_code == 2 and "--since: expected a date" in r.stderr


def test_audit_verify_detects_tampering(env: Env) -> None:
    env.deployed()
    with sqlite3.connect(env.db) as conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = 2")
    r = env.symbi("audit", "verify")
    assert r.exit_code == 1
    assert "error: audit chain BROKEN at event 2: event content does not match its hash" in r.stderr
    r = env.symbi("audit", "verify", "--format", "json")
    assert r.exit_code == 1 and json.loads(r.stdout)["first_bad_id"] == 2


# ---------------------------------------------------------------- configuration


def test_config_file_sets_store_path_and_flag_wins(env: Env) -> None:
    (env.root / "symbi.toml").write_text('[store]\npath = "data/jobs.db"\n')
    r = env.symbi("deploy", str(env.src), store=False)
    assert r.exit_code == 0 and "to data/jobs.db" in r.stderr
    assert (env.root / "data" / "jobs.db").exists()
    assert len(jobs_json_at(env, None)) == 3
    assert env.symbi("cron", "list").exit_code == 1  # --store wins: that file does not exist


def jobs_json_at(env: Env, store: str | None) -> list[dict[str, object]]:
    args = (["--store", store] if store else []) + ["cron", "list", "--format", "json"]
    r = env.symbi(*args, store=False)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_config_from_symbi_config_variable(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = env.root / "elsewhere.toml"
    cfg.write_text('[store]\npath = "${STATE_DIR}/s.db"\n')
    monkeypatch.setenv("SYMBI_CONFIG", str(cfg))
    monkeypatch.setenv("STATE_DIR", str(env.root / "st"))
    assert env.symbi("deploy", str(env.src), store=False).exit_code == 0
    assert (env.root / "st" / "s.db").exists()
    monkeypatch.setenv("SYMBI_CONFIG", str(env.root / "missing.toml"))
    r = env.symbi("cron", "list", store=False)
    assert r.exit_code == 2 and "missing.toml: config file does not exist" in r.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("[scheduler\nmax_concurrent_jobs = 3\n",
     "symbi.toml:1:11: invalid TOML: Expected ']' at the end of a table declaration"),
    ("[scheduler]\nmax_concurent_jobs = 3\n",
     "symbi.toml: [scheduler] unknown key `max_concurent_jobs` (did you mean `max_concurrent_jobs`?)"),
    ("[scheduler]\nmax_concurrent_jobs = \"lots\"\n",
     "symbi.toml: [scheduler] max_concurrent_jobs = \"lots\": expected an integer"),
])
def test_bad_config_is_reported_and_changes_nothing(env: Env, text: str, message: str) -> None:
    env.deployed()
    before = snapshot(env.db)
    (env.root / "symbi.toml").write_text(text)
    for args in (["cron", "list"], ["deploy", str(env.src)], ["cron", "pause", "greet"],
                 ["up", str(env.src), "--for", "1s"]):
        r = env.symbi(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert snapshot(env.db) == before


def test_bad_environment_variable_names_it(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBI_SCHEDULER_MAX_CONCURRENT", "many")
    r = env.symbi("cron", "list")
    assert r.exit_code == 2 and "SYMBI_SCHEDULER_MAX_CONCURRENT" in r.stderr
