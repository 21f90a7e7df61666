"""Shared helpers for the `symbi` CLI tests (not a test module)."""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from compiler.cli import cli as symbic_cli
from runtime.cli import cli as symbi_cli

SYMBI = Path(sys.executable).parent / "symbi"

#: Three jobs: a command agent with input, a stdlib agent, and a failing agent without retries.
JOBS_SYMBI = """\
// jobs for the CLI tests
agent "greeter" {
  command: "printf 'hello %s' \\"$SYMBI_INPUT\\""
}

agent "failer" {
  command: "echo boom >&2; exit 3"
}

schedule {
  name: "greet"
  agent: "greeter"
  cron: "0 9 * * 1-5"
  timezone: "Europe/Berlin"
  input: "world"
}

schedule {
  name: "nightly"
  agent: "echo"
  cron: "30 2 * * *"
}

schedule {
  name: "fragile"
  agent: "failer"
  cron: "0 * * * *"
  max_retries: 0
}
"""

TABLES = ("jobs", "runs", "audit_events", "agents", "lease")


@dataclass
class Env:
    """A working directory with a state database path and a sources file."""

    root: Path
    db: Path
    src: Path

    def symbi(self, *args: str, input: str | None = None, store: bool = True) -> Result:
        """Invoke `symbi [--store DB] ARGS` in-process; never a traceback."""
        argv = (["--store", str(self.db)] if store else []) + list(args)
        result = CliRunner().invoke(symbi_cli, argv, input=input, catch_exceptions=False)
        assert "Traceback" not in result.stdout + result.stderr
        return result

    def bundle(self, src: Path | None = None, name: str = "bundle.db") -> Path:
        """Compile ``src`` (default: the jobs file) with symbic into a bundle."""
        out = self.root / name
        result = CliRunner().invoke(symbic_cli, ["compile", str(src or self.src), "-o", str(out)],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return out

    def deployed(self) -> Env:
        """Deploy the jobs file into the state database."""
        r = self.symbi("deploy", str(self.src))
        assert r.exit_code == 0, r.output
        return self


def snapshot(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the state tables (read-only), to compare before/after a command."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES}
    finally:
        conn.close()


def table_rows(text: str) -> list[list[str]]:
    """Split an aligned table (header, rule, rows) into cells by the header's column starts."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 2:i] == "  ")]
    cells = []
    for ln in [lines[0], *lines[2:]]:
        for a in starts[1:]:  # aligned: every cell starts exactly at its column
            assert ln[a - 1] == " " and ln[a] != " ", (ln, a)
        bounds = [*starts, max(len(ln), len(header)) + 1]
        cells.append([ln[a:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)])
    return cells
