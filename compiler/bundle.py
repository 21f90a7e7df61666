"""The bundle: one SQLite file holding a compiled deployment (schema: ``docs/bundle.md``).

Deterministic by construction: no timestamps, rows inserted in sorted order, explicit page size
and journal mode, ``VACUUM`` at the end, and the file is written under a temporary name and
renamed into place, so compiling the same inputs twice gives byte-identical files and a reader
never sees a half-written bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.ir import AgentDef, JobDef
from compiler.source import SourceFile

#: Bumped on any incompatible change of the tables below.
FORMAT_VERSION = 1
#: ``PRAGMA application_id`` of a bundle ("SYMB"): tells a bundle from any other SQLite file.
APPLICATION_ID = 0x53594D42
_PAGE_SIZE = 4096


class BundleError(Exception):
    """A bundle that cannot be read or written; the message is meant for the user."""


@dataclass(frozen=True)
class Bundle:
    format_version: int
    compiler_version: str
    jobs: list[JobDef]
    agents: list[AgentDef]
    sources: list[tuple[str, str, str]]  # (name, sha256 hex, text)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _column_type(f: dataclasses.Field[Any]) -> str | None:
    """SQL type of a scalar dataclass field, or None for fields stored as JSON."""
    t = str(f.type)
    if "tuple" in t or "Def" in t or "Policy" in t:
        return None
    if t.startswith("bool"):
        return "INTEGER"
    if t.startswith("int"):
        return "INTEGER"
    if t.startswith("float"):
        return "REAL"
    return "TEXT"


def _table_columns(cls: type) -> list[tuple[str, str]]:
    """(column, SQL type) for every field: scalars as typed columns, the rest as JSON text."""
    cols = []
    for f in dataclasses.fields(cls):
        typ = _column_type(f)
        cols.append((f.name, typ or "TEXT"))  # JSON for lists/maps/nested definitions
    return cols


def _row(obj: JobDef | AgentDef) -> list[Any]:
    plain = obj.to_dict()
    row: list[Any] = []
    for f in dataclasses.fields(obj):
        v = plain[f.name]
        if _column_type(f) is None:
            row.append(None if v is None else _dumps(v))
        elif isinstance(v, bool):
            row.append(int(v))
        elif isinstance(v, list):  # e.g. an argv command: JSON in a TEXT column
            row.append(_dumps(v))
        else:
            row.append(v)
    row.append(_dumps(plain))
    return row


def _create_sql(table: str, cls: type) -> str:
    cols = ",\n  ".join(
        f"{name} {typ}" + (" PRIMARY KEY" if name == "name" else "") for name, typ in _table_columns(cls)
    )
    return f"CREATE TABLE {table} (\n  {cols},\n  definition TEXT NOT NULL\n)"


def write_bundle(
    path: str | os.PathLike[str],
    jobs: Sequence[JobDef],
    agents: Sequence[AgentDef],
    sources: Sequence[SourceFile],
    compiler_version: str,
) -> None:
    """Write a bundle atomically (temp file + rename). Raises ``BundleError`` on I/O errors."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        # O_EXCL: never reuse a stale file; mode 0o666 lets the umask decide, like a plain open.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            conn.execute("BEGIN")
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("CREATE TABLE sources (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, text TEXT NOT NULL)")
            conn.execute(_create_sql("agents", AgentDef))
            conn.execute(_create_sql("jobs", JobDef))
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                sorted([("format_version", str(FORMAT_VERSION)), ("compiler_version", compiler_version)]),
            )
            conn.executemany(
                "INSERT INTO sources VALUES (?, ?, ?)",
                sorted((s.name, _sha256(s.text), s.text) for s in {s.name: s for s in sources}.values()),
            )
            n_agent = len(dataclasses.fields(AgentDef)) + 1
            conn.executemany(
                f"INSERT INTO agents VALUES ({', '.join('?' * n_agent)})",
                [_row(a) for a in sorted(agents, key=lambda a: a.name)],
            )
            n_job = len(dataclasses.fields(JobDef)) + 1
            conn.executemany(
                f"INSERT INTO jobs VALUES ({', '.join('?' * n_job)})",
                [_row(j) for j in sorted(jobs, key=lambda j: j.name)],
            )
            conn.execute("COMMIT")
            conn.execute("VACUUM")
        finally:
            conn.close()
        os.replace(tmp, target)
    except (OSError, sqlite3.Error) as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise BundleError(f"cannot write bundle {target}: {e}") from e


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle. Raises ``BundleError`` (with a message for the user) when the file is
    missing, not a bundle, corrupt, or of a newer format."""
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"cannot read bundle {p}: no such file")
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise BundleError(f"cannot read bundle {p}: {e}") from e
    try:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise BundleError(f"{p} is not a symbi bundle (not an SQLite database)") from e
        if app_id != APPLICATION_ID:
            raise BundleError(f"{p} is not a symbi bundle (an SQLite database of another application)")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            fmt = int(meta["format_version"])
            if fmt > FORMAT_VERSION:
                raise BundleError(
                    f"{p} has bundle format {fmt}, newer than this symbi understands ({FORMAT_VERSION}); "
                    "upgrade symbi or recompile the sources with this version"
                )
            sources = [tuple(r) for r in conn.execute("SELECT name, sha256, text FROM sources ORDER BY name")]
            for name, digest, text in sources:
                if _sha256(text) != digest:
                    raise BundleError(f"{p} is corrupt: the checksum of source {name} does not match")
            agents = [AgentDef.from_dict(json.loads(r[0])) for r in conn.execute("SELECT definition FROM agents ORDER BY name")]
            jobs = [JobDef.from_dict(json.loads(r[0])) for r in conn.execute("SELECT definition FROM jobs ORDER BY name")]
        except BundleError:
            raise
        except (sqlite3.Error, KeyError, ValueError, TypeError) as e:
            raise BundleError(f"{p} is a corrupt symbi bundle: {e}") from e
        return Bundle(fmt, meta.get("compiler_version", ""), jobs, agents, sources)
    finally:
        conn.close()
