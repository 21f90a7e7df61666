"""Delivery seen from the `symbi` CLI: `cron run` (in-process) delivers, `cron history` and
`cron status --history` show receipts, and `symbi up` runs the delivery worker beside the
scheduler (a real subprocess)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from runtime.cli import cli as symbi_cli
from runtime.config import ENV_VARS

SYMBI = Path(sys.executable).parent / "symbi"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    yield tmp_path


def symbi(*args: str) -> Result:
    result = CliRunner().invoke(symbi_cli, ["--store", "state.db", *args],
                                catch_exceptions=False)
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_cron_run_delivers_and_history_shows_receipts(workdir: Path) -> None:
    hook = f"http://127.0.0.1:{closed_port()}/hook"  # nothing listens: the webhook retries
    (workdir / "jobs.symbi").write_text(f'''
schedule {{
  name: "noted"
  agent: "echo"
  cron: "0 3 * * *"
  delivery: ["log_file", "webhook"]
  webhook_url: "{hook}"
}}
schedule {{
  name: "plain"
  agent: "echo"
  cron: "0 4 * * *"
}}
''')
    assert symbi("deploy", "jobs.symbi").exit_code == 0
    r = symbi("cron", "run", "noted", "--input", "hi there")
    assert r.exit_code == 0  # a delivery problem does not fail the run
    assert r.stdout == "hi there\n"
    assert "delivery to webhook retrying: network error" in r.stderr
    assert "(the next `symbi up` retries it)" in r.stderr
    log = (workdir / ".symbi" / "logs" / "noted.log").read_text()
    assert " job=noted " in log and "\n  hi there\n" in log

    table = symbi("cron", "history", "noted").stdout.splitlines()
    assert table[0].split()[-1] == "DELIVERIES"
    assert table[-1].endswith("log_file ok, webhook retrying")
    data = json.loads(symbi("cron", "history", "noted", "--format", "json").stdout)
    (run,) = data
    assert [(d["channel"], d["status"], d["attempts"]) for d in run["deliveries"]] == [
        ("log_file", "delivered", 1), ("webhook", "retrying", 1)]
    assert run["deliveries"][1]["history"][0]["ok"] is False
    rows_csv = list(csv.DictReader(io.StringIO(
        symbi("cron", "history", "--format", "csv").stdout)))
    assert "deliveries" not in rows_csv[0]

    status = symbi("cron", "status", "noted", "--history", "1").stdout
    assert "DELIVERIES" in status and "log_file ok, webhook retrying" in status
    js = json.loads(symbi("cron", "status", "noted", "--history", "1", "--format",
                          "json").stdout)
    assert [d["channel"] for d in js["history"][0]["deliveries"]] == ["log_file", "webhook"]

    # a job without channels: no column, an empty list in JSON
    assert symbi("cron", "run", "plain").exit_code == 0
    assert "DELIVERIES" not in symbi("cron", "history", "plain").stdout
    assert json.loads(symbi("cron", "history", "plain", "--format", "json").stdout)[0][
        "deliveries"] == []


def test_symbi_up_delivers_runs(tmp_path: Path) -> None:
    (tmp_path / "jobs.symbi").write_text('''
schedule {
  name: "tick"
  agent: "echo"
  cron: "* * * * * *"
  input: "tock"
  delivery: ["stdout", "log_file"]
}
''')
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    r = subprocess.run([str(SYMBI), "--store", "state.db", "up", "jobs.symbi", "--for", "2500ms",
                        "--no-api"], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    blocks = re.findall(r"^=== tick \| succeeded \| [^|]+ \| [^|]+ \| run [0-9a-f]{8} ===\n"
                        r"tock\n\n", r.stdout, re.M)
    assert blocks, r.stdout
    log = (tmp_path / ".symbi" / "logs" / "tick.log").read_text()
    assert log.count(" job=tick ") == len(blocks)  # every run went to both channels
    h = subprocess.run([str(SYMBI), "--store", "state.db", "cron", "history", "tick",
                        "--format", "json"], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=60)
    runs = [x for x in json.loads(h.stdout) if x["status"] == "succeeded"]
    assert runs and all(sorted((d["channel"], d["status"]) for d in x["deliveries"]) == [
        ("log_file", "delivered"), ("stdout", "delivered")] for x in runs)
