"""`symbic fmt` on the command line: --check, --diff, in-place rewrite, stdin, refusals."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli import cli
from compiler.fmt import format_text

SYMBIC = Path(sys.executable).parent / "symbic"

MESSY = 'schedule{name="job" ,agent : "echo";cron:"@daily"   # daily\n}\n'
TIDY = 'schedule {\n  name: "job"\n  agent: "echo"\n  cron: "@daily"  # daily\n}\n'
BROKEN = 'schedule {\n  name: "job"\n  cron: "@daily"\n'


def invoke(*args: str, input: bytes | str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["fmt", *args], input=input, catch_exceptions=False)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "messy.symbi").write_text(MESSY)
    (tmp_path / "tidy.symbi").write_text(TIDY)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "legacy.dsl").write_text(MESSY)
    (tmp_path / "notes.txt").write_text(MESSY)  # not a source file: never touched
    return tmp_path


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_tidy_is_what_the_formatter_produces() -> None:
    assert format_text(MESSY).text == TIDY


# ---------------------------------------------------------------- --check


def test_check_lists_files_that_would_change_and_changes_nothing(tree: Path) -> None:
    before = snapshot(tree)
    code, out, err = invoke("--check", str(tree))
    assert code == 1
    assert out.splitlines() == [
        f"would reformat {tree / 'messy.symbi'}",
        f"would reformat {tree / 'sub' / 'legacy.dsl'}",
    ]
    assert "2 files would be reformatted, 1 already formatted" in err
    assert snapshot(tree) == before


def test_check_passes_on_formatted_files(tree: Path) -> None:
    code, out, err = invoke("--check", str(tree / "tidy.symbi"))
    assert (code, out) == (0, "")
    assert "0 files would be reformatted, 1 already formatted" in err


def test_check_with_diff_prints_the_diff_and_fails(tree: Path) -> None:
    before = snapshot(tree)
    code, out, _ = invoke("--check", "--diff", str(tree / "messy.symbi"))
    assert code == 1
    assert f"--- a/{tree / 'messy.symbi'}" in out and '+  agent: "echo"' in out
    assert '-schedule{name="job" ,agent : "echo";cron:"@daily"   # daily' in out
    assert snapshot(tree) == before


def test_diff_alone_changes_nothing_and_exits_0(tree: Path) -> None:
    before = snapshot(tree)
    code, out, _ = invoke("--diff", str(tree))
    assert code == 0 and out.count("--- a/") == 2
    assert snapshot(tree) == before


# ---------------------------------------------------------------- rewriting in place


def test_rewrites_in_place_recursively(tree: Path) -> None:
    os.chmod(tree / "messy.symbi", 0o640)
    tidy_before = snapshot(tree)["tidy.symbi"]
    code, out, err = invoke(str(tree))
    assert code == 0 and out == ""
    assert (tree / "messy.symbi").read_text() == TIDY
    assert (tree / "sub" / "legacy.dsl").read_text() == TIDY
    assert (tree / "notes.txt").read_text() == MESSY
    assert snapshot(tree)["tidy.symbi"] == tidy_before  # an unchanged file is not rewritten
    assert stat.S_IMODE((tree / "messy.symbi").stat().st_mode) == 0o640
    assert f"reformatted {tree / 'messy.symbi'}" in err
    assert "2 files reformatted, 1 already formatted" in err
    # no temporary file left behind
    assert sorted(p.name for p in tree.rglob("*")) == [
        "legacy.dsl", "messy.symbi", "notes.txt", "sub", "tidy.symbi",
    ]  # fmt: skip
    # and now everything is formatted
    assert invoke("--check", str(tree))[0] == 0


def test_syntax_error_file_is_untouched_and_reported(tree: Path) -> None:
    bad = tree / "broken.symbi"
    bad.write_text(BROKEN)
    before = bad.stat().st_mtime_ns
    code, _, err = invoke(str(bad), str(tree / "messy.symbi"))
    assert code == 1
    assert bad.read_text() == BROKEN and bad.stat().st_mtime_ns == before
    assert f"{bad}:4:1: error[syntax-error]" in err
    assert "1 not formatted because of errors" in err
    assert (tree / "messy.symbi").read_text() == TIDY  # the other file is still formatted


def test_syntax_error_with_check_exits_1(tree: Path) -> None:
    (tree / "broken.symbi").write_text(BROKEN)
    code, out, err = invoke("--check", str(tree / "broken.symbi"), str(tree / "tidy.symbi"))
    assert code == 1 and out == "" and "error[syntax-error]" in err


def test_unreadable_inputs_exit_3(tree: Path) -> None:
    code, _, err = invoke(str(tree / "missing.symbi"))
    assert code == 3 and "cannot read" in err
    latin1 = tree / "latin1.symbi"
    latin1.write_bytes('schedule { name: "caf\xe9" }\n'.encode("latin-1"))
    code, _, err = invoke(str(latin1))
    assert code == 3 and "invalid-encoding" in err
    assert latin1.read_bytes() == 'schedule { name: "caf\xe9" }\n'.encode("latin-1")


def test_crlf_file_is_rewritten_with_lf(tmp_path: Path) -> None:
    f = tmp_path / "crlf.symbi"
    f.write_bytes(TIDY.replace("\n", "\r\n").encode())
    assert invoke("--check", str(f))[0] == 1
    assert invoke(str(f))[0] == 0
    assert f.read_bytes() == TIDY.encode()


def test_format_failed_leaves_file_untouched(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import compiler.fmt as fmt_module

    monkeypatch.setattr(fmt_module._Printer, "module", lambda self, module: "schedule {}\n")
    code, _, err = invoke(str(tree / "messy.symbi"))
    assert code == 1 and "error[format-failed]" in err
    assert (tree / "messy.symbi").read_text() == MESSY


def test_directory_without_sources_is_a_warning(tmp_path: Path) -> None:
    code, _, err = invoke(str(tmp_path))
    assert code == 0 and "no .symbi or .dsl files" in err


# ---------------------------------------------------------------- stdin


def test_stdin_to_stdout() -> None:
    code, out, _ = invoke("-", input=MESSY)
    assert (code, out) == (0, TIDY)
    code, out, _ = invoke("-", input=TIDY)
    assert (code, out) == (0, TIDY)


def test_stdin_check_and_errors() -> None:
    assert invoke("--check", "-", input=MESSY)[:2] == (1, "would reformat <stdin>\n")
    assert invoke("--check", "-", input=TIDY)[:2] == (0, "")
    code, out, err = invoke("-", "--stdin-filename", "jobs.symbi", input=BROKEN)
    assert code == 1 and out == "" and "jobs.symbi:4:1: error[syntax-error]" in err


def test_real_process_stdin_and_exit_codes(tmp_path: Path) -> None:
    proc = subprocess.run([str(SYMBIC), "fmt", "-"], input=MESSY.encode(), capture_output=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == TIDY.encode()
    f = tmp_path / "a.symbi"
    f.write_text(MESSY)
    proc = subprocess.run([str(SYMBIC), "fmt", "--check", str(f)], capture_output=True, timeout=60)
    assert proc.returncode == 1 and f.read_text() == MESSY
