"""Bad input to `symbi`: a clear message, a non-zero exit, no traceback, and nothing changed
(every state table compared before and after)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from symbi_util import JOBS_SYMBI, Env, snapshot

from runtime.config import ENV_VARS
from runtime.store import MIGRATIONS


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    src = tmp_path / "jobs.symbi"
    src.write_text(JOBS_SYMBI)
    yield Env(tmp_path, tmp_path / "state.db", src)


@pytest.fixture
def deployed(env: Env) -> Env:
    env.deployed()
    assert env.symbi("cron", "run", "greet").exit_code == 0  # some history to protect
    return env


def files_in(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("args", [
    ["cron", "pause", "nope"], ["cron", "resume", "nope"], ["cron", "reset", "nope"],
    ["cron", "remove", "nope", "--force"], ["cron", "status", "nope"],
    ["cron", "status", "nope", "--format", "json"], ["cron", "history", "nope"],
    ["cron", "run", "nope"], ["cron", "run", "nope", "--no-wait"],
])
def test_unknown_job(deployed: Env, args: list[str]) -> None:
    before = snapshot(deployed.db)
    r = deployed.symbi(*args)
    assert r.exit_code == 1
    assert r.stderr == "error: no job with id or name `nope` (see `symbi cron list`)\n"
    assert r.stdout == ""
    assert snapshot(deployed.db) == before


def test_unknown_job_suggests_a_close_name(deployed: Env) -> None:
    before = snapshot(deployed.db)
    r = deployed.symbi("cron", "pause", "gret")
    assert r.exit_code == 1 and "no job with id or name `gret` (did you mean `greet`?)" in r.stderr
    assert snapshot(deployed.db) == before


@pytest.mark.parametrize(("spec", "message"), [
    ('{"name": "n", "agent_id": "echo", "cron_expr": "61 * * * *"}',
     "`cron`: minute 61 is out of range 0-59\n    61 * * * *\n    ^^"),
    ('{"name": "n", "agent": "echo"}', "one of `cron` (or `cron_expr`) and `at` is required"),
    ('{"name": "n", "agent": "echo", "cron": "@daily", "at": "2099-01-01T00:00:00Z"}',
     "give exactly one of `cron` and `at`, not both"),
    ('{"agent": "echo", "cron": "@daily"}', "`name` is required"),
    ('["not", "an", "object"]', "expected a JSON object, got list"),
    ('{"name": "n", "agent": "echo", "cron": "@daily", "delivery": ["webhook"]}',
     "`delivery`: channel `webhook` needs `webhook_url`"),
    ('{"name": "n", "agent": "echo", "cron": "@daily", "max_concurrent": 0}',
     "`max_concurrent`: expected an integer ≥ 1, got 0"),
    ('{"name": "n", "agent": "echo", "cron": "@daily", "policy": {"max_runtime": "soon"}}',
     "`policy.max_runtime`: expected a duration"),
])
def test_invalid_job_json(deployed: Env, spec: str, message: str) -> None:
    before = snapshot(deployed.db)
    r = deployed.symbi("cron", "add", "--json", spec)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: --json: invalid job definition:\n")
    assert message in r.stderr
    assert snapshot(deployed.db) == before


@pytest.mark.parametrize(("text", "message"), [
    ("[scheduler]\nmax_jitter_seconds = \n", "symbi.toml:2:22: invalid TOML"),
    ("[schedular]\n", "symbi.toml: unknown section `[schedular]` (did you mean `[scheduler]`?)"),
    ("[scheduler]\ntick_interval_seconds = 0\n", "tick_interval_seconds"),
])
def test_corrupt_config_changes_nothing(deployed: Env, text: str, message: str) -> None:
    before = snapshot(deployed.db)
    (deployed.root / "symbi.toml").write_text(text)
    for args in (["cron", "add", "--json", '{"name": "n", "agent": "echo", "cron": "@daily"}'],
                 ["cron", "remove", "greet", "--force"], ["cron", "run", "greet"],
                 ["deploy", str(deployed.src), "--prune"]):
        r = deployed.symbi(*args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert snapshot(deployed.db) == before


def test_store_whose_parent_is_a_file(env: Env) -> None:
    blocker = env.root / "blocker"
    blocker.write_text("I am a file\n")
    before = files_in(env.root)
    for args in (["deploy", str(env.src)], ["up", str(env.src), "--for", "1s"],
                 ["cron", "add", "--json", '{"name": "n", "agent": "echo", "cron": "@daily"}']):
        r = env.symbi("--store", str(blocker / "sub" / "state.db"), *args, store=False)
        assert r.exit_code == 1, r.output
        assert r.stderr == (f"error: cannot create the state database {blocker}/sub/state.db: "
                            f"{blocker} is a file, not a directory\n")
    assert files_in(env.root) == before and blocker.read_text() == "I am a file\n"


def test_store_in_a_directory_that_cannot_be_written(env: Env) -> None:
    # /proc refuses new entries even to root (tests may run as root, where chmod does not bite)
    target = Path("/proc/symbi-test-store/state.db")
    r = env.symbi("--store", str(target), "deploy", str(env.src), store=False)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"error: cannot create the state database {target}: cannot "
                               "create directory /proc/symbi-test-store: ")
    assert not target.parent.exists()
    r = env.symbi("--store", "/proc/state.db", "deploy", str(env.src), store=False)
    assert r.exit_code == 1
    assert r.stderr.startswith("error: cannot create the state database /proc/state.db: ")


def test_store_that_is_a_directory_or_missing(env: Env) -> None:
    (env.root / "dir.db").mkdir()
    r = env.symbi("--store", str(env.root / "dir.db"), "cron", "list", store=False)
    assert r.exit_code == 1 and "is a directory" in r.stderr
    r = env.symbi("cron", "list")
    assert r.exit_code == 1
    assert f"no state database at {env.db} (deploy a bundle" in r.stderr
    assert not env.db.exists()  # reading commands never create it


def test_store_that_is_not_a_database(env: Env) -> None:
    env.db.write_bytes(b"this is not sqlite at all" * 100)
    before = env.db.read_bytes()
    for args in (["cron", "list"], ["deploy", str(env.src)]):
        r = env.symbi(*args)
        assert r.exit_code == 1
        assert "not a usable SQLite state database" in r.stderr
    assert env.db.read_bytes() == before


def test_store_of_another_application(env: Env) -> None:
    with sqlite3.connect(env.db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    r = env.symbi("deploy", str(env.src))
    assert r.exit_code == 1
    assert "not a symbi state database (it has tables customers but no schema_version)" in r.stderr
    with sqlite3.connect(env.db) as conn:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"customers"}


def test_store_with_a_newer_schema(deployed: Env) -> None:
    newest = max(m.version for m in MIGRATIONS)
    with sqlite3.connect(deployed.db) as conn:
        conn.execute("INSERT INTO schema_version (version, description, applied_at)"
                     " VALUES (?, 'from the future', '2099-01-01T00:00:00+00:00')", (newest + 1,))
    before = snapshot(deployed.db)
    for args in (["cron", "list"], ["deploy", str(deployed.src)], ["cron", "pause", "greet"],
                 ["up", "--for", "1s"], ["audit", "verify"]):
        r = deployed.symbi(*args)
        assert r.exit_code == 1, args
        assert r.stderr == (
            f"error: {deployed.db}: the state database has schema version {newest + 1}, but "
            f"this version of symbi only knows versions up to {newest}; it was written by a "
            "newer symbi — upgrade symbi (the file was not changed)\n")
    assert snapshot(deployed.db) == before


def test_bad_bundle(env: Env) -> None:
    fake = env.root / "bundle.db"
    fake.write_text("not a bundle")
    r = env.symbi("deploy", str(fake))
    assert r.exit_code == 1 and "is not a symbi bundle" in r.stderr
    assert not env.db.exists()


def test_up_bad_duration_and_sources(env: Env) -> None:
    r = env.symbi("up", str(env.src), "--for", "soon")
    assert r.exit_code == 2 and "--for: expected a duration such as 30s or 5m, got 'soon'" in r.stderr
    env.src.write_text(JOBS_SYMBI.replace('agent: "echo"', 'agent: "ecko"'))
    r = env.symbi("up", str(env.src), "--for", "1s")
    assert r.exit_code == 1
    assert "error[undefined-agent]" in r.stderr and "nothing was deployed" in r.stderr
    assert not env.db.exists()


def test_cron_run_failure_is_exit_1_but_recorded(deployed: Env) -> None:
    before = snapshot(deployed.db)
    r = deployed.symbi("cron", "run", "fragile")
    assert r.exit_code == 1 and r.stderr.splitlines()[-1].endswith("failed: exit status 3: boom")
    after = snapshot(deployed.db)
    assert len(after["runs"]) == len(before["runs"]) + 1  # a failed run is history, not an error


def test_tz_is_used_for_local_times(deployed: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # a different local zone changes only how times are shown, never what is stored
    before = snapshot(deployed.db)
    outputs = []
    for zone in ("America/St_Johns", "Pacific/Chatham"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        outputs.append(deployed.symbi("cron", "history", "greet").stdout)
    monkeypatch.undo()
    time.tzset()
    assert "-03:30" in outputs[0] or "-02:30" in outputs[0]  # Newfoundland, standard or DST
    assert "+13:45" in outputs[1] or "+12:45" in outputs[1]  # Chatham Islands
    assert snapshot(deployed.db) == before
