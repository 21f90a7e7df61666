"""`symbi` as a real process: `up` output and stopping, standby, --watch, the confirmation
prompt on a terminal, exit codes without tracebacks."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from symbi_util import JOBS_SYMBI, SYMBI

from runtime.config import ENV_VARS
from runtime.store import SqliteStore

EVERY_SECOND = """\
agent "stamp" {
  command: "echo stamped $SYMBI_INPUT"
}

schedule {
  name: "every-second"
  agent: "stamp"
  cron: "* * * * * *"
  input: "now"
}

schedule {
  name: "later"
  agent: "echo"
  cron: "0 0 1 1 *"
}
"""
LINE = re.compile(r"^(\d\d:\d\d:\d\d) ([+-]\d\d:\d\d)  (\S) (\S+)\s+(\w+)\s+(\S+)\s+(.*)$")


@pytest.fixture
def proc_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["TZ"] = "Asia/Kolkata"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def symbi(tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 30,
          input: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(SYMBI), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=timeout, input=input)
    assert "Traceback" not in r.stdout + r.stderr
    return r


def read_until(stream: int, pattern: str, deadline: float) -> str:
    """Read from a file descriptor until ``pattern`` appears (or fail at ``deadline``)."""
    buf = b""
    while pattern.encode() not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern!r} not seen in {buf.decode(errors='replace')!r}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream, 65536)
            assert chunk, f"EOF before {pattern!r}: {buf.decode(errors='replace')!r}"
            buf += chunk
    return buf.decode()


def test_up_for_prints_summary_and_one_line_per_run(tmp_path: Path,
                                                   proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(EVERY_SECOND)
    r = symbi(tmp_path, proc_env, "--store", "state.db", "up", "jobs.symbi", "--for", "2500ms")
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    assert err[0] == "deployed 1 source file to state.db: 2 jobs (2 created)"
    assert err[2].startswith("symbi ") and " · state state.db · scheduler " in err[2]
    assert err[3] == "2 jobs (2 active) · max_concurrent_jobs 10 · tick 1s"
    header = err[4].split()
    assert header == ["JOB", "SCHEDULE", "MEANING", "NEXT", "RUN"]
    assert err[6].split()[:7] == ["every-second", "*", "*", "*", "*", "*", "*"]
    assert "every second" in err[6]
    assert "+05:30 (in " in err[6] or "+05:30 (now)" in err[6]
    assert "stopping by itself after 2.5s; Ctrl-C to stop" in r.stderr
    assert "stopping (--for 2.5s elapsed)" in r.stderr
    out = r.stdout.splitlines()
    assert re.fullmatch(r"── \w{3} \d{4}-\d\d-\d\d ──", out[0])
    runs = [LINE.match(line) for line in out[1:]]
    assert runs and all(runs), out
    assert 2 <= len(runs) <= 4  # one line per run: every second for 2.5 s
    for m in runs:
        assert m is not None
        assert m[2] == "+05:30" and m[3] == "✓" and m[4] == "every-second"
        assert m[5] == "succeeded" and m[7] == "stamped now"
    finished = re.search(r"scheduler stopped after \d+s: (\d+) runs? \((\d+) succeeded\)", r.stderr)
    assert finished and int(finished[1]) == len(runs) == int(finished[2])
    # the store agrees with what was printed
    r = symbi(tmp_path, proc_env, "--store", "state.db", "cron", "history", "every-second",
              "--format", "json")
    assert r.stdout.count('"status": "succeeded"') == len(runs)


def test_up_without_paths_verbose_stops_on_sigterm(
        tmp_path: Path, proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(EVERY_SECOND)
    assert symbi(tmp_path, proc_env, "--store", "s.db", "deploy", "jobs.symbi").returncode == 0
    p = subprocess.Popen([str(SYMBI), "--store", "s.db", "up", "-v"], cwd=tmp_path,
                         env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stderr is not None
        seen = read_until(p.stdout.fileno(), "succeeded", time.monotonic() + 10)
        assert "▶ every-second" in seen  # --verbose also prints the start of each run
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    assert "stopping (SIGTERM)" in err.decode() and "scheduler stopped after" in err.decode()
    assert b"Traceback" not in out + err


def test_no_standby_exits_when_the_lease_is_held(tmp_path: Path,
                                                 proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(EVERY_SECOND)
    assert symbi(tmp_path, proc_env, "--store", "s.db", "deploy", "jobs.symbi").returncode == 0
    holder = SqliteStore.open(tmp_path / "s.db")
    try:
        assert holder.try_acquire_lease("other-host:4242", 60)
        started = time.monotonic()
        r = symbi(tmp_path, proc_env, "--store", "s.db", "up", "--no-standby", "--for", "5s")
        assert time.monotonic() - started < 5
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == ("error: other-host:4242 holds the scheduler lease "
                                             "on s.db; not starting (--no-standby)")
        assert r.stdout == ""
        # with standby (the default) it waits, says so, and stops cleanly
        r = symbi(tmp_path, proc_env, "--store", "s.db", "up", "--for", "1500ms")
        assert r.returncode == 0
        assert "standby: another scheduler (other-host:4242) holds the lease on s.db" in r.stderr
        assert r.stdout == ""
    finally:
        holder.close()
    r = symbi(tmp_path, proc_env, "--store", "s.db", "cron", "history", "--format", "json")
    assert r.stdout.strip() == "[]"  # neither instance ran anything


def test_status_watch_refreshes_until_ctrl_c(tmp_path: Path, proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(JOBS_SYMBI)
    assert symbi(tmp_path, proc_env, "--store", "s.db", "deploy", "jobs.symbi").returncode == 0
    p = subprocess.Popen([str(SYMBI), "--store", "s.db", "cron", "status", "greet", "--watch"],
                         cwd=tmp_path, env=proc_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout is not None
        screen = read_until(p.stdout.fileno(), "Ctrl-C to stop", time.monotonic() + 10)
        assert "Job:" in screen and "greet" in screen and "No runs yet." in screen
        assert "refreshing every 5s" in screen
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and b"Traceback" not in out + err


def _remove_on_terminal(tmp_path: Path, env: dict[str, str], answer: bytes) -> tuple[int, str]:
    master, slave = pty.openpty()
    p = subprocess.Popen([str(SYMBI), "--store", "s.db", "cron", "remove", "greet"],
                         cwd=tmp_path, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    try:
        text = read_until(master, "[y/N]", time.monotonic() + 10)
        os.write(master, answer)
        p.wait(10)
        try:
            while select.select([master], [], [], 0.2)[0]:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                text += chunk.decode()
        except OSError:  # EIO: the other side is closed
            pass
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
    return p.returncode, text


def test_remove_asks_on_a_terminal(tmp_path: Path, proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(JOBS_SYMBI)
    assert symbi(tmp_path, proc_env, "--store", "s.db", "deploy", "jobs.symbi").returncode == 0
    code, text = _remove_on_terminal(tmp_path, proc_env, b"n\n")
    assert "remove job greet (job_" in text and "and its 0 runs of history? [y/N]" in text
    assert code == 1 and "error: not removed" in text
    listing = symbi(tmp_path, proc_env, "--store", "s.db", "cron", "list").stdout
    assert " greet " in listing
    code, text = _remove_on_terminal(tmp_path, proc_env, b"y\n")
    assert code == 0 and "removed job greet (job_" in text
    listing = symbi(tmp_path, proc_env, "--store", "s.db", "cron", "list").stdout
    assert " greet " not in listing
    # --force does not ask, and without a terminal nothing asks either
    r = symbi(tmp_path, proc_env, "--store", "s.db", "cron", "remove", "nightly", input="")
    assert r.returncode == 0 and "[y/N]" not in r.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["frobnicate"], 2, "No such command 'frobnicate'"),
    (["cron", "list", "--format", "yaml"], 2, "'yaml' is not one of"),
    (["--config", "nope.toml", "cron", "list"], 2, "error: nope.toml: config file does not exist"),
    (["cron", "list"], 1, "error: no state database at .symbi/state.db"),
    (["deploy", "missing.db"], 3, "no such file or directory"),
])
def test_exit_codes_without_traceback(tmp_path: Path, proc_env: dict[str, str],
                                      args: list[str], code: int, message: str) -> None:
    r = symbi(tmp_path, proc_env, *args)
    assert r.returncode == code and message in r.stderr
    assert not (tmp_path / ".symbi").exists()


def test_version_and_help(tmp_path: Path, proc_env: dict[str, str]) -> None:
    r = symbi(tmp_path, proc_env, "--version")
    assert r.returncode == 0 and r.stdout.startswith("symbi, version ")
    r = symbi(tmp_path, proc_env, "cron", "--help")
    for sub in ("list", "add", "remove", "pause", "resume", "status", "run", "history", "reset"):
        assert re.search(rf"^\s+{sub}\s", r.stdout, re.M), sub


def test_cron_run_is_picked_up_by_the_running_scheduler(tmp_path: Path,
                                                        proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(JOBS_SYMBI)
    p = subprocess.Popen([str(SYMBI), "--store", "s.db", "up", "jobs.symbi"], cwd=tmp_path,
                         env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stderr is not None and p.stdout is not None
        err = read_until(p.stderr.fileno(), "Ctrl-C to stop", time.monotonic() + 10)
        owner = re.search(r"scheduler (\S+)", err)
        assert owner
        started = time.monotonic()
        r = symbi(tmp_path, proc_env, "--store", "s.db", "cron", "run", "greet", "--input", "x",
                  "--format", "json")
        assert r.returncode == 0 and time.monotonic() - started < 5
        assert '"output": "hello x"' in r.stdout
        assert f'"owner": "{owner[1]}"' in r.stdout  # the scheduler ran it, not this process
        seen = read_until(p.stdout.fileno(), "[manual] hello x", time.monotonic() + 5)
        assert "✓ greet" in seen
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0


def test_second_ctrl_c_interrupts_running_runs_and_releases_the_lease(
        tmp_path: Path, proc_env: dict[str, str]) -> None:
    (tmp_path / "slow.symbi").write_text(
        'agent "slow" {\n  command: "sleep 30"\n}\n\n'
        'schedule {\n  name: "slow"\n  agent: "slow"\n  cron: "* * * * * *"\n  max_retries: 0\n}\n')
    p = subprocess.Popen([str(SYMBI), "--store", "s.db", "up", "slow.symbi", "-v"],
                         cwd=tmp_path, env=proc_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        assert p.stdout is not None and p.stderr is not None
        read_until(p.stdout.fileno(), "▶ slow", time.monotonic() + 10)
        p.send_signal(signal.SIGINT)
        read_until(p.stderr.fileno(), "Ctrl-C again to interrupt them", time.monotonic() + 5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and time.monotonic() - started < 10
    assert "interrupting 1 running run (SIGINT)" in err.decode()
    assert "! slow" in out.decode() and "cancelled: stopped at once by the operator" in out.decode()
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM lease").fetchone() == (0,)
        statuses = {s for (s,) in conn.execute("SELECT status FROM runs WHERE trigger = 'schedule'"
                                               " AND started_at IS NOT NULL")}
    finally:
        conn.close()
    assert statuses == {"interrupted"}
    r = symbi(tmp_path, proc_env, "--store", "s.db", "up", "--no-standby", "--for", "1s", "-q")
    assert r.returncode == 0  # the lease was released: no standby, no waiting


def test_a_dead_lease_holder_is_taken_over_at_once(tmp_path: Path,
                                                   proc_env: dict[str, str]) -> None:
    (tmp_path / "jobs.symbi").write_text(JOBS_SYMBI)
    assert symbi(tmp_path, proc_env, "--store", "s.db", "deploy", "jobs.symbi").returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid of this host that no longer runs, as after `kill -9`
    holder = SqliteStore.open(tmp_path / "s.db")
    try:
        assert holder.try_acquire_lease(f"{os.uname().nodename}:{gone.pid}", 60)
    finally:
        holder.close()
    r = symbi(tmp_path, proc_env, "--store", "s.db", "up", "--for", "1s", "-q")
    assert r.returncode == 0
    # the lease was valid for another minute; its holder's pid is gone: no standby
    assert "standby" not in r.stderr and "holds the lease" not in r.stderr
    assert (f"took over the scheduler lease from {os.uname().nodename}:{gone.pid}: that process"
            " is no longer running (killed?)") in r.stderr
