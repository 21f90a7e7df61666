"""system_health thresholds set per job through the input (``memory=95 disk=98 load_per_cpu=4``
or a JSON object), run through the real python executor."""

from __future__ import annotations

import pytest

from compiler.ir import AgentDef
from runtime.executor import AgentContext, run_agent
from stdlib.agents import system_health
from stdlib.agents.system_health import DEFAULT_THRESHOLDS, Thresholds, parse_thresholds

HEALTH = AgentDef(name="system_health", executor="python",
                  handler="stdlib.agents.system_health:run")


def snap(mem: float = 93.0, disk: float = 95.0, load: float = 3.0) -> system_health.HealthSnapshot:
    return system_health.HealthSnapshot(
        hostname="h", load=(load, 0.4, 0.3), cpus=1, mem_total=8 << 30,
        mem_available=1 << 30, mem_percent=mem,
        disks=(system_health.DiskUse("/", 100, int(disk), 100 - int(disk), disk),),
        uptime_seconds=60)


@pytest.mark.parametrize(("text", "expected"), [
    ("", DEFAULT_THRESHOLDS),
    ("check the box", DEFAULT_THRESHOLDS),  # other words are ignored
    ("memory=95", Thresholds(memory=95)),
    ("memory=95, disk=99.5 load_per_cpu=4", Thresholds(95, 99.5, 4)),
    ('{"disk": 97, "load_per_cpu": 8}', Thresholds(disk=97, load_per_cpu=8)),
    ("{}", DEFAULT_THRESHOLDS),
])
def test_parse_thresholds(text: str, expected: Thresholds) -> None:
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("cpu=3", "unknown threshold `cpu` (known: memory, disk, load_per_cpu)"),
    ("memory=lots", "threshold `memory` must be a number, got 'lots'"),
    ("disk=-1", "threshold `disk` must be a finite number >= 0, got '-1'"),
    ("disk=nan", "threshold `disk` must be a finite number >= 0, got 'nan'"),
    ('{"memory": true}', "threshold `memory` must be a number, got True"),
    ('{"memory": [1]}', "threshold `memory` must be a number, got [1]"),
])
def test_bad_thresholds_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_thresholds(text)
    assert str(info.value) == f"system_health: {message}"


def test_thresholds_decide_the_status_and_the_heartbeat_answer() -> None:
    s = snap()
    assert s.warnings() == ["memory 93% used", "disk / 95% used", "load 3.00 > 2x1 cpu"]
    generous = Thresholds(memory=95, disk=96, load_per_cpu=3)
    assert s.warnings(generous) == []
    assert system_health.heartbeat_answer(s, generous) == "sleep"
    assert system_health.summary_line(s, generous).endswith(": OK")
    strict_load = Thresholds(memory=95, disk=96, load_per_cpu=2.5)
    assert system_health.heartbeat_answer(s, strict_load) == "alert: load 3.00 > 2.5x1 cpu"


async def test_the_input_sets_the_thresholds_of_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_health, "snapshot", lambda cwd=None: snap())
    ctx = AgentContext(memory={"symbi.heartbeat": "true"})
    warn = await run_agent(HEALTH, "", context=ctx)
    assert warn.status == "succeeded" and warn.output.endswith("\nalert: memory 93% used; "
                                                               "disk / 95% used; load 3.00 > "
                                                               "2x1 cpu")
    ok = await run_agent(HEALTH, "memory=95 disk=96 load_per_cpu=3",
                         context=AgentContext(memory={"symbi.heartbeat": "true"}))
    assert ok.status == "succeeded" and ok.output.endswith("\nsleep")
    assert ok.summary is not None and ok.summary.endswith(": OK")
    bad = await run_agent(HEALTH, "memroy=95")
    assert bad.status == "failed"
    assert "unknown threshold `memroy`" in (bad.error or "")
