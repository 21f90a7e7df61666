"""``log_file``: append each run to the job's log file inside the log directory.

Path rules (the log directory is ``<data_dir>/logs``): by default ``<job name>.log``; a job's
``log_file`` is relative to the log directory, or absolute but inside it; a ``..`` component,
a NUL character, a path outside the directory, a directory symlink leading out of it, and a
symlink as the file itself are refused. Files are created with mode 0600 (directories 0700).

Format: text (a header line per run, then the output indented by two spaces) or JSON lines
(the webhook payload plus ``time``) — JSON for a ``.jsonl``/``.ndjson`` file or with
``[scheduler.delivery] log_file_format = "json"``. Size-based rotation: when an entry would
take the file past ``log_file_max_bytes`` it becomes ``NAME.1`` (``.1`` → ``.2`` …, keeping
``log_file_backups`` files).
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

from compiler.ir import JobDef
from runtime.delivery import (
    ChannelContext,
    DeliveryOutcome,
    expand_setting,
    format_duration,
    run_payload,
)
from runtime.store import RunRow

JSON_SUFFIXES = (".jsonl", ".ndjson")


class LogFileChannel:
    """Appends to per-job log files, one writer per file at a time."""

    name = "log_file"

    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        self._locks: dict[Path, asyncio.Lock] = {}

    # ------------------------------------------------------------------ paths

    def path_for(self, job: JobDef) -> Path:
        """The (absolute) file of ``job``; ``ValueError`` with the reason when refused."""
        base = Path(os.path.abspath(self.context.log_dir))
        if job.log_file is None:
            rel = Path(f"{job.name}.log")
        else:
            raw = expand_setting(job.log_file, self.context.env, "log_file")
            if not raw.strip() or "\x00" in raw:
                raise ValueError("`log_file` is empty or contains a NUL character")
            p = Path(raw)
            if ".." in p.parts:
                raise ValueError(f"`log_file` \"{raw}\" contains `..`; give a path inside the "
                                 f"log directory {base}")
            if p.is_absolute():
                try:
                    rel = p.relative_to(base)
                except ValueError:
                    raise ValueError(f"`log_file` \"{raw}\" is outside the log directory "
                                     f"{base}") from None
            else:
                rel = p
            if rel == Path("."):
                raise ValueError(f"`log_file` \"{raw}\" names the log directory itself")
        full = base / rel
        return full

    def _prepare(self, full: Path) -> None:
        base = Path(os.path.abspath(self.context.log_dir))
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        full.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # a directory symlink inside the log directory must not lead out of it
        if not full.parent.resolve().is_relative_to(base.resolve()):
            raise ValueError(f"{full} leads outside the log directory {base} through a "
                             "symbolic link")

    def is_json(self, path: Path) -> bool:
        """JSON lines for ``.jsonl``/``.ndjson`` files or when configured."""
        return (path.suffix.lower() in JSON_SUFFIXES
                or self.context.config.log_file_format == "json")

    # ------------------------------------------------------------------ entries

    def format_entry(self, job: JobDef, run: RunRow, output: str, json_lines: bool) -> str:
        """One entry (ends with a newline)."""
        now = self.context.clock.now().isoformat(timespec="microseconds")
        if json_lines:
            doc = {"time": now, **run_payload(job, run, output)}
            return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
        head = (f"[{now}] job={job.name} run={run.id} status={run.status} trigger={run.trigger}"
                f" attempt={run.attempt} duration={format_duration(run.duration_ms)}")
        body = [f"  {line}" for line in output.rstrip("\n").split("\n")] if output else []
        if run.error:
            body.append(f"  error: {run.error}")
        if not body:
            body.append("  (no output)")
        return "\n".join([head, *body]) + "\n"

    def _append(self, path: Path, data: bytes) -> None:
        self._prepare(path)
        cfg = self.context.config
        if cfg.log_file_max_bytes > 0 and cfg.log_file_backups > 0:
            try:
                size = os.lstat(path).st_size
            except FileNotFoundError:
                size = 0
            if size > 0 and size + len(data) > cfg.log_file_max_bytes:
                rotate(path, cfg.log_file_backups)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)

    async def route(self, channel: str, job: JobDef, run: RunRow, output: str
                    ) -> DeliveryOutcome:
        """Append the run's entry to the job's file."""
        try:
            path = self.path_for(job)
        except ValueError as e:
            return DeliveryOutcome.failure(f"rejected: {e}")
        entry = self.format_entry(job, run, output, self.is_json(path)).encode("utf-8")
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:
            try:
                await asyncio.to_thread(self._append, path, entry)
            except ValueError as e:
                return DeliveryOutcome.failure(f"rejected: {e}")
            except OSError as e:
                if e.errno == errno.ELOOP:
                    return DeliveryOutcome.failure(f"rejected: {path} is a symbolic link")
                return DeliveryOutcome.failure(
                    f"cannot write {path}: {e.strerror or e}",
                    retryable=e.errno in (errno.ENOSPC, errno.EAGAIN, errno.EINTR, errno.EIO))
        return DeliveryOutcome.success(response=str(path))


def rotate(path: Path, backups: int) -> None:
    """``path`` → ``path.1``, ``path.1`` → ``path.2`` …; the oldest beyond ``backups`` is
    dropped (the RotatingFileHandler scheme)."""
    for i in range(backups - 1, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            os.replace(src, path.with_name(f"{path.name}.{i + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))
