"""stdlib agents `echo` and `system_health`, run through the python executor (SPEC §5.4)."""

from __future__ import annotations

import os
import re
import time

import psutil
import pytest

from compiler.ir import AgentDef
from runtime.executor import AgentContext, derive_summary, run_agent
from stdlib.agents import echo, system_health


def agent(handler: str) -> AgentDef:
    return AgentDef(
        name=handler.split(":")[0].rsplit(".", 1)[-1], executor="python", handler=handler
    )


@pytest.mark.parametrize(
    ("text", "expected"), [("hello", "hello"), ("", "(no input)"), (" a\nb ", " a\nb ")]
)
async def test_echo_returns_its_input(text: str, expected: str) -> None:
    r = await run_agent(agent("stdlib.agents.echo:run"), text, context=AgentContext())
    assert (r.status, r.output, r.summary) == ("succeeded", expected, None)


def test_echo_is_marked_inline() -> None:
    assert echo.run.symbi_inline is True  # type: ignore[attr-defined]


SUMMARY = re.compile(
    r"^load (\d+\.\d\d)/(\d+\.\d\d)/(\d+\.\d\d) \((\d+) cpu\), mem (\d+)% used, "
    r"disk / (\d+)% used(?:, disk \S+ \d+% used)?: (OK|WARN \(.+\))$"
)


async def test_system_health_reports_this_machine() -> None:
    r = await run_agent(agent("stdlib.agents.system_health:run"), "")
    assert r.status == "succeeded"
    assert r.summary is not None
    m = SUMMARY.match(r.summary)
    assert m, r.summary
    load1, load5, load15 = (float(m.group(i)) for i in (1, 2, 3))
    real = os.getloadavg()
    for reported, actual in zip((load1, load5, load15), real, strict=True):
        assert abs(reported - actual) < 0.5
    assert int(m.group(4)) == psutil.cpu_count()
    assert abs(int(m.group(5)) - psutil.virtual_memory().percent) <= 5
    assert abs(int(m.group(6)) - psutil.disk_usage("/").percent) <= 2
    # the readable report carries the same facts
    assert f"on {psutil.cpu_count()} cpu" in r.output
    assert "memory" in r.output and "disk /" in r.output and "uptime" in r.output
    assert derive_summary(r.output, r.summary) == r.summary


def test_snapshot_matches_psutil() -> None:
    s = system_health.snapshot()
    mem = psutil.virtual_memory()
    assert s.cpus == psutil.cpu_count()
    assert s.mem_total == mem.total
    assert abs(s.mem_percent - mem.percent) <= 5
    assert s.disks[0].path == "/" and s.disks[0].total == psutil.disk_usage("/").total
    assert abs(s.uptime_seconds - (time.time() - psutil.boot_time())) < 5


def test_working_directory_filesystem_is_reported_by_mount_point() -> None:
    # /proc is always its own filesystem on Linux
    assert [d.path for d in system_health.snapshot(cwd="/proc/self/fd").disks] == ["/", "/proc"]
    assert [d.path for d in system_health.snapshot(cwd="/").disks] == ["/"]
    assert "disk /proc 0% used" in system_health.summary_line(system_health.snapshot(cwd="/proc"))


def _snap(
    mem: float = 30.0, disk: float = 50.0, load: float = 0.5, cpus: int = 2
) -> system_health.HealthSnapshot:
    return system_health.HealthSnapshot(
        hostname="h",
        load=(load, 0.4, 0.3),
        cpus=cpus,
        mem_total=8 << 30,
        mem_available=4 << 30,
        mem_percent=mem,
        disks=(system_health.DiskUse("/", 100, int(disk), 100 - int(disk), disk),),
        uptime_seconds=90061,
    )


@pytest.mark.parametrize(
    ("snap", "status", "report_status"),
    [
        (_snap(), "OK", "OK"),
        (_snap(mem=90.0, disk=90.0, load=4.0), "OK", "OK"),  # thresholds are "more than"
        (_snap(mem=91.0), "WARN (memory 91% used)", "WARN: memory 91% used"),
        (_snap(disk=95.0), "WARN (disk / 95% used)", "WARN: disk / 95% used"),
        (_snap(load=4.01), "WARN (load 4.01 > 2x2 cpu)", "WARN: load 4.01 > 2x2 cpu"),
        (
            _snap(mem=99.0, load=9.0),
            "WARN (memory 99% used; load 9.00 > 2x2 cpu)",
            "WARN: memory 99% used; load 9.00 > 2x2 cpu",
        ),
    ],
)
def test_status_word(snap: system_health.HealthSnapshot, status: str, report_status: str) -> None:
    assert system_health.summary_line(snap).endswith(f": {status}")
    assert system_health.report(snap).splitlines()[-1] == f"  status        {report_status}"


def test_summary_and_report_format() -> None:
    snap = _snap(mem=31.4, disk=63.0, load=0.52)
    assert (
        system_health.summary_line(snap)
        == "load 0.52/0.40/0.30 (2 cpu), mem 31% used, disk / 63% used: OK"
    )
    report = system_health.report(snap)
    assert "  load average  0.52 (1m)  0.40 (5m)  0.30 (15m)  on 2 cpu" in report
    assert "  memory        8.0 GiB total, 4.0 GiB available, 31.4% used" in report
    assert "  uptime        1d 1h 1m" in report


def test_system_health_is_cheap_enough_to_run_inline() -> None:
    assert system_health.run.symbi_inline is True  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(20):
        system_health.run("", None)
    per_call = (time.perf_counter() - start) / 20
    assert per_call < 0.005  # measured ~45 µs; inline must never stall the loop noticeably
