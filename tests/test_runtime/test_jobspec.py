"""JSON job definitions (CLI `cron add --json`, the HTTP API) → JobDef: null means default."""

from __future__ import annotations

import pytest

from compiler.ir import JobDef
from runtime.jobspec import JobSpecError, job_from_json

BASE = {"name": "a", "agent": "echo", "cron": "0 * * * *"}


def test_null_text_fields_become_their_defaults_not_none() -> None:
    j = job_from_json({**BASE, "input": None, "description": None})
    assert j.input == "" and j.description == ""


def test_null_durations_restore_the_default_on_update() -> None:
    j = job_from_json({**BASE, "retry_backoff": "5m", "catchup_window": "2h", "jitter": "10s"})
    assert (j.retry_backoff_seconds, j.catchup_window_seconds, j.jitter_seconds) == (300, 7200, 10)
    u = job_from_json({"retry_backoff": None, "catchup_window": None, "jitter": None,
                       "input": None}, partial_of=j)
    defaults = JobDef(name="x", agent="y")
    assert u.retry_backoff_seconds == defaults.retry_backoff_seconds
    assert u.catchup_window_seconds == defaults.catchup_window_seconds
    assert u.jitter_seconds is None and u.input == ""


@pytest.mark.parametrize(("body", "needle"), [
    ({**BASE, "retry_backoff": "soon"}, "`retry_backoff`: expected a duration"),
    ({**BASE, "input": 3}, "`input`: expected a string"),
    ({"agent": "echo", "cron": "0 * * * *"}, "`name` is required"),
    ({**BASE, "cron": "0 25 * * *"}, "hour 25 is out of range 0-23"),
])
def test_bad_fields_are_named(body: dict[str, object], needle: str) -> None:
    with pytest.raises(JobSpecError) as e:
        job_from_json(body)
    assert any(needle in p for p in e.value.problems), e.value.problems
