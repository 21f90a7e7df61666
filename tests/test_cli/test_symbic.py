"""`symbic` CLI: exit codes, formats, stdin, compile, explain — via CliRunner and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler import __version__
from compiler.bundle import read_bundle
from compiler.cli import cli

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
SYMBIC = Path(sys.executable).parent / "symbic"

GOOD = 'agent worker { command: "true" }\nschedule {\n  name: "job"\n  agent: "worker"\n  cron: "0 9 * * *"\n}\n'
BAD_CRON = 'schedule {\n  name: "job"\n  agent: "echo"\n  cron: "0 25 * * *"\n}\n'
WARN_ONLY = 'schedule {\n  name: "other-job"\n  agent: "nobody"\n  cron: "@daily"\n}\n'
MISSING_BRACE = 'schedule {\n  name: "job"\n  agent: "echo"\n  cron: "@daily"\n'


def invoke(*args: str, input: bytes | str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in [("good", GOOD), ("bad", BAD_CRON), ("warn", WARN_ONLY), ("brace", MISSING_BRACE)]:
        p = tmp_path / f"{name}.symbi"
        p.write_text(text)
        out[name] = p
    return out


# ---------------------------------------------------------------- check: exit codes


def test_check_clean_file_exits_0(files: dict[str, Path]) -> None:
    code, out, err = invoke("check", str(files["good"]))
    assert code == 0 and out == "" and "no problems" in err


def test_check_errors_exit_1_with_located_caret(files: dict[str, Path]) -> None:
    code, out, err = invoke("check", str(files["bad"]))
    assert code == 1
    first = out.splitlines()[0]
    assert first == f"{files['bad']}:4:12: error[invalid-cron]: hour 25 is out of range 0-23"
    assert out.splitlines()[3].endswith("           ^^")
    assert "1 error" in err


def test_check_warnings_exit_0_but_1_when_strict(files: dict[str, Path]) -> None:
    assert invoke("check", str(files["warn"]))[0] == 0
    code, out, _ = invoke("check", "--strict", str(files["warn"]))
    assert code == 1 and "warning[undefined-agent]" in out


def test_missing_brace_is_a_located_syntax_error(files: dict[str, Path]) -> None:
    code, out, _ = invoke("check", "--format", "concise", str(files["brace"]))
    assert code == 1
    assert out.startswith(f"{files['brace']}:")
    assert "error[syntax-error]" in out


def test_unknown_channel_suggests_slack(tmp_path: Path) -> None:
    p = tmp_path / "slak.symbi"
    p.write_text('schedule {\n  name: "j"\n  agent: "echo"\n  cron: "@daily"\n  delivery: ["slak"]\n}\n')
    code, out, _ = invoke("check", str(p))
    assert code == 1
    assert out.splitlines()[0] == f"{p}:5:14: error[unknown-channel]: unknown delivery channel `slak`"
    assert "  = help: did you mean `slack`" in out.splitlines()


def test_missing_file_exits_3(tmp_path: Path) -> None:
    code, out, _ = invoke("check", str(tmp_path / "nope.symbi"))
    assert code == 3 and "error[unreadable-input]" in out and "no such file" in out


def test_non_utf8_file_exits_3_with_position(tmp_path: Path) -> None:
    p = tmp_path / "latin1.symbi"
    p.write_bytes('# caf\xe9\nschedule {}\n'.encode("latin-1"))
    code, out, _ = invoke("check", str(p))
    assert code == 3
    assert out.splitlines()[0].startswith(f"{p}:1:6: error[invalid-encoding]")


def test_unreadable_wins_over_errors(files: dict[str, Path], tmp_path: Path) -> None:
    assert invoke("check", str(files["bad"]), str(tmp_path / "nope.symbi"))[0] == 3


def test_usage_errors_exit_2(files: dict[str, Path]) -> None:
    assert invoke("check")[0] == 2
    assert invoke("check", "--format", "xml", str(files["good"]))[0] == 2
    assert invoke("frobnicate")[0] == 2
    assert invoke("compile", str(files["good"]))[0] == 2  # -o is required


def test_directory_is_searched_recursively(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.symbi").write_text(GOOD)
    (tmp_path / "sub" / "b.dsl").write_text(BAD_CRON.replace('"job"', '"job2"'))
    (tmp_path / "sub" / "notes.txt").write_text("schedule {")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.symbi").write_text("schedule {")
    code, out, err = invoke("check", "--format", "concise", str(tmp_path))
    assert code == 1
    assert out.splitlines() == [f"{tmp_path}/sub/b.dsl:4:12: error[invalid-cron]: hour 25 is out of range 0-23"]
    assert "checked 2 files" in err


def test_empty_directory_warns(tmp_path: Path) -> None:
    code, _, err = invoke("check", str(tmp_path))
    assert code == 0 and "no .symbi or .dsl files" in err


def test_real_upstream_files_check_without_errors() -> None:
    """Upstream Symbiont files (agents with `with` bodies, rule policies) are accepted."""
    paths = [str(p) for p in sorted((ROOT / "tests" / "fixtures" / "upstream").glob("*.symbi"))
             if not p.name.startswith("invalid")]
    assert paths
    code, out, _ = invoke("check", "--format", "json", *paths)
    assert code == 0
    assert {d["severity"] for d in json.loads(out)} <= {"warning"}


def test_files_form_one_compilation(tmp_path: Path) -> None:
    (tmp_path / "agents.symbi").write_text('agent worker { command: "true" }\n')
    (tmp_path / "jobs.symbi").write_text('schedule { name: "j" agent: "worker" cron: "@daily" }\n')
    assert invoke("check", "--strict", str(tmp_path / "jobs.symbi"), str(tmp_path / "agents.symbi"))[0] == 0


def test_stdin_with_filename() -> None:
    code, out, _ = invoke("check", "-", "--stdin-filename", "jobs/x.symbi", "--format", "concise", input=BAD_CRON)
    assert code == 1 and out.startswith("jobs/x.symbi:4:12: error[invalid-cron]")


# ---------------------------------------------------------------- check: formats


def test_json_format(files: dict[str, Path]) -> None:
    code, out, err = invoke("check", "--format", "json", str(files["bad"]))
    data = json.loads(out)
    assert code == 1 and err == ""
    assert data[0]["code"] == "invalid-cron" and (data[0]["line"], data[0]["column"]) == (4, 12)
    code, out, _ = invoke("check", "--format", "json", str(files["good"]))
    assert code == 0 and json.loads(out) == []


def test_sarif_format(files: dict[str, Path]) -> None:
    import jsonschema

    code, out, _ = invoke("check", "--format", "sarif", str(files["bad"]), str(files["warn"]))
    doc = json.loads(out)
    schema = json.loads((ROOT / "tests" / "fixtures" / "sarif-2.1.0-subset.json").read_text())
    jsonschema.validate(doc, schema)
    assert code == 1
    assert doc["runs"][0]["tool"]["driver"]["version"] == __version__
    assert {r["ruleId"] for r in doc["runs"][0]["results"]} == {"invalid-cron", "undefined-agent"}


def test_github_format(files: dict[str, Path]) -> None:
    code, out, _ = invoke("check", "--format", "github", str(files["bad"]))
    assert code == 1
    assert out.startswith(f"::error file={files['bad']},line=4,col=12,endLine=4,endColumn=14,title=invalid-cron::")


def test_color_never_in_tests_but_always_on_request(files: dict[str, Path]) -> None:
    assert "\x1b[" not in invoke("check", str(files["bad"]))[1]
    assert "\x1b[" in invoke("check", "--color", "always", str(files["bad"]))[1]


# ---------------------------------------------------------------- compile


def test_compile_writes_bundle_and_summary(tmp_path: Path, files: dict[str, Path]) -> None:
    out_db = tmp_path / "out.db"
    code, _, err = invoke("compile", str(files["good"]), "-o", str(out_db))
    assert code == 0
    assert err.strip() == f"compiled 1 job, 1 agent from 1 file → {out_db}"
    b = read_bundle(out_db)
    assert [j.name for j in b.jobs] == ["job"] and b.compiler_version == __version__


def test_compile_with_errors_writes_nothing(tmp_path: Path, files: dict[str, Path]) -> None:
    out_db = tmp_path / "out.db"
    code, out, err = invoke("compile", str(files["bad"]), "-o", str(out_db))
    assert code == 1 and "error[invalid-cron]" in out and "was not written" in err
    assert not out_db.exists()


def test_compile_undefined_agent_is_an_error_unless_allowed(tmp_path: Path, files: dict[str, Path]) -> None:
    out_db = tmp_path / "out.db"
    code, out, _ = invoke("compile", str(files["warn"]), "-o", str(out_db))
    assert code == 1 and "error[undefined-agent]" in out and not out_db.exists()
    code, out, _ = invoke("compile", "--allow-undefined-agents", str(files["warn"]), "-o", str(out_db))
    assert code == 0 and "warning[undefined-agent]" in out and out_db.exists()


def test_compile_twice_is_byte_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert invoke("compile", str(EXAMPLES), "-o", str(a))[0] == 0
    assert invoke("compile", str(EXAMPLES), "-o", str(b))[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_compile_unwritable_output_exits_3(tmp_path: Path, files: dict[str, Path]) -> None:
    code, _, err = invoke("compile", str(files["good"]), "-o", str(tmp_path / "no" / "dir" / "x.db"))
    assert code == 3 and "cannot write bundle" in err


def test_compile_no_inputs_is_usage_error(tmp_path: Path) -> None:
    assert invoke("compile", str(tmp_path), "-o", str(tmp_path / "x.db"))[0] == 2


# ---------------------------------------------------------------- explain


def test_explain_text() -> None:
    code, out, _ = invoke("explain", "0 9 * * 1-5", "--tz", "Europe/Berlin", "-n", "3", "--from", "2030-03-29T12:00:00")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "0 9 * * 1-5  (Europe/Berlin)"
    assert lines[3:] == ["  2030-04-01T09:00:00+02:00  Mon", "  2030-04-02T09:00:00+02:00  Tue",
                         "  2030-04-03T09:00:00+02:00  Wed"]


def test_explain_json_is_strictly_after_from() -> None:
    code, out, _ = invoke("explain", "@hourly", "--from", "2030-01-01T10:00:00Z", "-n", "2", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["next"] == ["2030-01-01T11:00:00+00:00", "2030-01-01T12:00:00+00:00"]
    assert doc["timezone"] == "UTC" and doc["description"]


def test_explain_bad_cron_shows_caret_and_exits_1() -> None:
    code, _, err = invoke("explain", "0 25 * * *")
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == "<cron>:1:3: error[invalid-cron]: hour 25 is out of range 0-23"
    assert lines[2] == "1 | 0 25 * * *" and lines[3] == "  |   ^^"


def test_explain_bad_tz_and_from_exit_2() -> None:
    code, _, err = invoke("explain", "@daily", "--tz", "Europe/Berln")
    assert code == 2 and "Europe/Berlin" in err
    assert invoke("explain", "@daily", "--from", "yesterday")[0] == 2
    assert invoke("explain", "@daily", "-n", "0")[0] == 2


def test_version_and_help() -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"symbic {__version__}"
    code, out, _ = invoke("check", "--help")
    assert code == 0 and "Examples:" in out and "--stdin-filename" in out


def test_internal_error_is_reported_without_traceback(monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]) -> None:
    import compiler.compile

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(compiler.compile, "compile_paths", boom)
    monkeypatch.delenv("SYMBIC_DEBUG", raising=False)
    code, out, err = invoke("check", str(files["good"]))
    assert code == 70 and "internal error: RuntimeError: kaboom" in err


# ---------------------------------------------------------------- real processes


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SYMBIC_DEBUG", "NO_COLOR")}
    raw = subprocess.run([str(SYMBIC), *args], input=stdin, capture_output=True, timeout=60, env=env, cwd=ROOT)
    proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode())
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_process_check_examples_is_clean() -> None:
    proc = _run("check", "examples/")
    assert proc.returncode == 0, proc.stdout
    assert "error" not in proc.stdout and proc.stdout == ""


def test_process_missing_brace_exit_1(files: dict[str, Path]) -> None:
    proc = _run("check", str(files["brace"]))
    assert proc.returncode == 1 and "error[syntax-error]" in proc.stdout
    assert "\x1b[" not in proc.stdout  # not a terminal: no colour


def test_process_compile_twice_identical(tmp_path: Path) -> None:
    for name in ("a.db", "b.db"):
        proc = _run("compile", "examples", "-o", str(tmp_path / name))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "compiled" in proc.stderr
    assert (tmp_path / "a.db").read_bytes() == (tmp_path / "b.db").read_bytes()


def test_process_exit_codes_for_bad_input(tmp_path: Path) -> None:
    assert _run("check", str(tmp_path / "missing.symbi")).returncode == 3
    assert _run("check", "--bogus-flag", "x").returncode == 2
    proc = _run("explain", "0 0 9 * * * 2030 x")
    assert proc.returncode == 1 and "error[invalid-cron]" in proc.stderr
    proc = _run("check", "-", "--stdin-filename", "in.symbi", stdin=b"schedule { \xff")
    assert proc.returncode == 3 and proc.stdout.startswith("in.symbi:1:12: error[invalid-encoding]")
