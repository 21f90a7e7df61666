"""The bundle file: round trip, byte-identical output, clear errors for bad files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from compiler.bundle import APPLICATION_ID, FORMAT_VERSION, BundleError, read_bundle, write_bundle
from compiler.ir import AgentDef, AllowedHours, HeartbeatDef, JobDef, SchedulePolicy
from compiler.source import SourceFile

JOBS = [
    JobDef(
        name="zeta",
        agent="a",
        cron="0 9 * * *",
        timezone="Europe/Berlin",
        tags=("x", "y"),
        heartbeat=HeartbeatDef(True, "fully_ephemeral", 5, 60.0),
        delivery=("webhook", "slack"),
        webhook_url="${HOOK}",
        webhook_headers=(("Authorization", "Bearer ${T}"),),
        policy=SchedulePolicy(name="p", require_approval=True, approvers=("ops",),
                              allowed_hours=AllowedHours("22:00", "04:00")),
        max_retries=2,
        jitter_seconds=1.5,
        source="a.symbi:3",
    ),
    JobDef(name="alpha", agent="b", at="2030-01-01T00:00:00+00:00", enabled=False, source="a.symbi:20"),
]
AGENTS = [
    AgentDef(name="b", executor="command", command=("ls", "-l"), env=(("K", "v"),), source="a.symbi:1"),
    AgentDef(name="a", executor="llm", model="m", system_prompt="p\nq", temperature=0.2, capabilities=("c",)),
]
SOURCES = [SourceFile("b.symbi", "agent b {}\n"), SourceFile("a.symbi", "# ä\n")]


def _write(path: Path) -> bytes:
    write_bundle(path, JOBS, AGENTS, SOURCES, "0.1.0")
    return path.read_bytes()


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "b.db"
    _write(p)
    b = read_bundle(p)
    assert b.format_version == FORMAT_VERSION and b.compiler_version == "0.1.0"
    assert b.jobs == sorted(JOBS, key=lambda j: j.name)
    assert b.agents == sorted(AGENTS, key=lambda a: a.name)
    assert [s[0] for s in b.sources] == ["a.symbi", "b.symbi"]
    assert b.sources[0][2] == "# ä\n" and len(b.sources[0][1]) == 64


def test_byte_identical_when_written_twice(tmp_path: Path) -> None:
    first = _write(tmp_path / "one.db")
    second = _write(tmp_path / "two.db")
    assert first == second
    # the input order does not matter either
    write_bundle(tmp_path / "three.db", JOBS[::-1], AGENTS[::-1], SOURCES[::-1], "0.1.0")
    assert (tmp_path / "three.db").read_bytes() == first


def test_tables_have_columns_and_definition_json(tmp_path: Path) -> None:
    p = tmp_path / "b.db"
    _write(p)
    conn = sqlite3.connect(p)
    try:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        row = conn.execute("SELECT cron, timezone, enabled, max_retries, jitter_seconds, delivery, policy, definition "
                           "FROM jobs WHERE name = 'zeta'").fetchone()
        assert row[:5] == ("0 9 * * *", "Europe/Berlin", 1, 2, 1.5)
        assert json.loads(row[5]) == ["webhook", "slack"]
        assert json.loads(row[6])["name"] == "p"
        assert json.loads(row[7])["webhook_url"] == "${HOOK}"
        names = [r[0] for r in conn.execute("SELECT name FROM jobs ORDER BY rowid")]
        assert names == ["alpha", "zeta"]
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta == {"format_version": str(FORMAT_VERSION), "compiler_version": "0.1.0"}
        assert json.loads(conn.execute("SELECT command FROM agents WHERE name='b'").fetchone()[0]) == ["ls", "-l"]
    finally:
        conn.close()


def test_no_temporary_files_left(tmp_path: Path) -> None:
    _write(tmp_path / "b.db")
    _write(tmp_path / "b.db")  # replacing an existing bundle
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.db"]


def test_unwritable_target_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot write bundle"):
        write_bundle(tmp_path / "no" / "such" / "dir" / "b.db", JOBS, AGENTS, SOURCES, "x")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such file"):
        read_bundle(tmp_path / "nope.db")


def test_text_file_is_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.db"
    p.write_text("schedule {}\n" * 100)
    with pytest.raises(BundleError, match="not a symbi bundle"):
        read_bundle(p)


def test_other_sqlite_database_is_not_a_bundle(tmp_path: Path) -> None:
    p = tmp_path / "x.db"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(BundleError, match="another application"):
        read_bundle(p)


def _mutate(p: Path, sql: str) -> None:
    conn = sqlite3.connect(p)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_newer_format_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "b.db"
    _write(p)
    _mutate(p, f"UPDATE meta SET value = '{FORMAT_VERSION + 1}' WHERE key = 'format_version'")
    with pytest.raises(BundleError, match="newer than this symbi understands"):
        read_bundle(p)


def test_tampered_source_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "b.db"
    _write(p)
    _mutate(p, "UPDATE sources SET text = 'changed' WHERE name = 'a.symbi'")
    with pytest.raises(BundleError, match="checksum of source a.symbi"):
        read_bundle(p)


def test_broken_definition_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "b.db"
    _write(p)
    _mutate(p, "UPDATE jobs SET definition = '{not json' WHERE name = 'alpha'")
    with pytest.raises(BundleError, match="corrupt symbi bundle"):
        read_bundle(p)
    _write(p)
    _mutate(p, "DROP TABLE jobs")
    with pytest.raises(BundleError, match="corrupt symbi bundle"):
        read_bundle(p)


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "b.db"
    data = _write(p)
    p.write_bytes(data[:1500])
    with pytest.raises(BundleError):
        read_bundle(p)
