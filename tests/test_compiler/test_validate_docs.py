"""docs/language.md stays in sync with compiler/schema.py and the diagnostic registry."""

from __future__ import annotations

from pathlib import Path

from compiler.diagnostics import CODES
from compiler.ir import HeartbeatDef, JobDef, SchedulePolicy
from compiler.schema import BLOCKS, update_docs

DOC = Path(__file__).parents[2] / "docs" / "language.md"


def test_generated_tables_are_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert update_docs(text) == text, "run `python -m compiler.schema docs/language.md`"


def test_every_schema_key_and_code_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for block in BLOCKS.values():
        assert f"<!-- schema:{block.name} -->" in text
        for prop in block.props:
            assert f"| `{prop.key}`" in text, prop.key
    for code in CODES:
        assert f"`{code}`" in text, code


def test_schema_defaults_agree_with_ir() -> None:
    job, policy, hb = JobDef(name="n", agent="a"), SchedulePolicy(), HeartbeatDef()
    s, p, h = BLOCKS["schedule"], BLOCKS["policy"], BLOCKS["heartbeat"]
    assert s.get("timezone").default == f'"{job.timezone}"'  # type: ignore[union-attr]
    assert s.get("session_mode").default == f'"{job.session_mode}"'  # type: ignore[union-attr]
    assert s.get("catchup").default == f'"{job.catchup}"'  # type: ignore[union-attr]
    assert s.get("audit").default == f'"{job.audit}"'  # type: ignore[union-attr]
    assert s.get("max_concurrent").default == str(job.max_concurrent)  # type: ignore[union-attr]
    assert s.get("retry_backoff").default == '"30s"' and job.retry_backoff_seconds == 30  # type: ignore[union-attr]
    assert s.get("catchup_window").default == '"1h"' and job.catchup_window_seconds == 3600  # type: ignore[union-attr]
    assert p.get("approval_timeout").default == '"1h"' and policy.approval_timeout_seconds == 3600  # type: ignore[union-attr]
    assert h.get("max_iterations").default == str(hb.max_iterations)  # type: ignore[union-attr]
