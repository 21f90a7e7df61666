"""The ``system_health`` agent: load, memory, disk and uptime of the machine it runs on.

Needs no network and no API key, so the examples and the README demo run anywhere. The
summary is one line ending in a status word: ``OK``, or ``WARN (reasons)`` when memory or a
disk is more than 90 % used or the 1-minute load exceeds twice the CPU count.

The thresholds can be set per job in the input: ``memory=95 disk=98 load_per_cpu=4`` (any of
the three, separated by spaces or commas) or the JSON object ``{"memory": 95, …}``. Other words
in the input are ignored; a known name with a bad value, or an unknown ``name=value``, fails
the run with a message naming it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from runtime.executor import AgentContext

MEM_WARN_PERCENT = 90.0
DISK_WARN_PERCENT = 90.0
LOAD_WARN_PER_CPU = 2.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Warn when memory or a disk is more than this many percent used, or the 1-minute load
    is more than ``load_per_cpu`` times the CPU count."""

    memory: float = MEM_WARN_PERCENT
    disk: float = DISK_WARN_PERCENT
    load_per_cpu: float = LOAD_WARN_PER_CPU


DEFAULT_THRESHOLDS = Thresholds()
_THRESHOLD_NAMES = ("memory", "disk", "load_per_cpu")
_PAIR = re.compile(r"([A-Za-z_][\w.-]*)=(\S*)")


def _threshold(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"system_health: threshold `{name}` must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"system_health: threshold `{name}` must be a number, "
                         f"got {value!r}") from None
    if not number >= 0 or number == float("inf"):  # also refuses NaN
        raise ValueError(f"system_health: threshold `{name}` must be a finite number >= 0, "
                         f"got {value!r}")
    return number


def parse_thresholds(text: str) -> Thresholds:
    """The thresholds an input sets (see the module docstring); defaults for the rest."""
    text = (text or "").strip()
    values: dict[str, object] = {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            values = data
    if not values:
        values = {m.group(1): m.group(2) for m in _PAIR.finditer(text.replace(",", " "))}
    unknown = sorted(k for k in values if k not in _THRESHOLD_NAMES)
    if unknown:
        raise ValueError(f"system_health: unknown threshold `{unknown[0]}` (known: "
                         f"{', '.join(_THRESHOLD_NAMES)})")
    return replace(DEFAULT_THRESHOLDS,
                   **{k: _threshold(k, v) for k, v in values.items()})


@dataclass(frozen=True, slots=True)
class DiskUse:
    path: str
    total: int
    used: int
    free: int
    percent: float


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """One reading of the machine's state."""

    hostname: str
    load: tuple[float, float, float]
    cpus: int
    mem_total: int
    mem_available: int
    mem_percent: float
    disks: tuple[DiskUse, ...]  # "/" first, then the working directory's filesystem if other
    uptime_seconds: float

    def warnings(self, t: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
        """Why the machine needs attention; empty when all is well."""
        out: list[str] = []
        if self.mem_percent > t.memory:
            out.append(f"memory {self.mem_percent:.0f}% used")
        for d in self.disks:
            if d.percent > t.disk:
                out.append(f"disk {d.path} {d.percent:.0f}% used")
        if self.load[0] > t.load_per_cpu * self.cpus:
            out.append(f"load {self.load[0]:.2f} > {t.load_per_cpu:g}x{self.cpus} cpu")
        return out


def _disk(path: str) -> DiskUse:
    u = psutil.disk_usage(path)
    return DiskUse(path=path, total=u.total, used=u.used, free=u.free, percent=u.percent)


def _mount_point(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (walk up while the device is the
    same)."""
    path = os.path.realpath(path)
    dev = os.stat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            return path
        path = parent
    return path


def snapshot(cwd: str | None = None) -> HealthSnapshot:
    """Read the machine's state now (all local calls, well under a millisecond)."""
    cwd = cwd or os.getcwd()
    mem = psutil.virtual_memory()
    disks = [_disk("/")]
    try:
        mount = _mount_point(cwd)
        if mount != "/":
            disks.append(_disk(mount))
    except OSError:  # the working directory vanished: report "/" alone
        pass
    return HealthSnapshot(
        hostname=platform.node(),
        load=psutil.getloadavg(),
        cpus=psutil.cpu_count() or 1,
        mem_total=mem.total,
        mem_available=mem.available,
        mem_percent=mem.percent,
        disks=tuple(disks),
        uptime_seconds=max(0.0, time.time() - psutil.boot_time()),
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"


def summary_line(s: HealthSnapshot, t: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """``load 0.52/0.40/0.33 (2 cpu), mem 31% used, disk / 63% used: OK``."""
    disks = ", ".join(f"disk {d.path} {d.percent:.0f}% used" for d in s.disks)
    warnings = s.warnings(t)
    status = f"WARN ({'; '.join(warnings)})" if warnings else "OK"
    l1, l5, l15 = s.load
    return (
        f"load {l1:.2f}/{l5:.2f}/{l15:.2f} ({s.cpus} cpu), "
        f"mem {s.mem_percent:.0f}% used, {disks}: {status}"
    )


def report(s: HealthSnapshot, t: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """A readable multi-line report of ``s``."""
    l1, l5, l15 = s.load
    lines = [
        f"System health of {s.hostname or 'this machine'}",
        f"  load average  {l1:.2f} (1m)  {l5:.2f} (5m)  {l15:.2f} (15m)  on {s.cpus} cpu",
        f"  memory        {_size(s.mem_total)} total, {_size(s.mem_available)} available, "
        f"{s.mem_percent:.1f}% used",
    ]
    for d in s.disks:
        lines.append(
            f"  disk {d.path:<8} {_size(d.total)} total, {_size(d.free)} free, "
            f"{d.percent:.1f}% used"
        )
    lines.append(f"  uptime        {_duration(s.uptime_seconds)}")
    warnings = s.warnings(t)
    lines.append("  status        " + ("WARN: " + "; ".join(warnings) if warnings else "OK"))
    return "\n".join(lines)


def heartbeat_answer(s: HealthSnapshot, t: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """The last line of a heartbeat iteration: ``sleep`` when all is well, else the action to
    take (an alert naming what is wrong)."""
    warnings = s.warnings(t)
    return "sleep" if not warnings else "alert: " + "; ".join(warnings)


def run(input: str, context: AgentContext | None = None) -> dict[str, Any]:
    """Report this machine's health: ``{"output": report, "summary": one line}``.

    As a heartbeat agent (the runtime sets ``symbi.heartbeat`` in the context's memory) the
    report ends with a last line ``sleep`` when all is well, or ``alert: …`` (the heartbeat
    then assesses again, up to its ``max_iterations``). The input may set the thresholds
    (:func:`parse_thresholds`).
    """
    t = parse_thresholds(input)
    s = snapshot()
    out = report(s, t)
    if context is not None and context.memory.get("symbi.heartbeat") == "true":
        out += "\n" + heartbeat_answer(s, t)
    return {"output": out, "summary": summary_line(s, t)}


# Reads a few /proc files and one statvfs per disk (tens of microseconds, measured): cheap
# enough to call on the event loop.
run.symbi_inline = True  # type: ignore[attr-defined]
