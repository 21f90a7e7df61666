"""The README and docs/*.md show what the tools really accept and print.

Every ```symbi block passes `symbic check` and is canonically formatted, every ```toml block
loads with `runtime.config.load_config`, every flag in the README's command tables exists on
that command, the diagnostics example is byte-exact, and the webhook-signature snippet verifies
a real `X-Symbi-Signature`.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from compiler.cli import cli as symbic_cli
from runtime.cli import cli as symbi_cli
from runtime.config import load_config
from stdlib.channels.webhook import sign

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, str]]:
    """(where, body) of every fenced block of `lang` in the README and docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                line = text.count("\n", 0, m.start()) + 1
                out.append((f"{doc.name}:{line}", m.group(2)))
    return out


def readme_block_after(marker: str) -> str:
    """The body of the first fenced block after `marker` in the README."""
    text = README.read_text(encoding="utf-8")
    start = text.index(marker)
    m = FENCE.search(text, start)
    assert m is not None, marker
    return m.group(2)


SYMBI_BLOCKS = blocks("symbi")
TOML_BLOCKS = [(w, b) for w, b in blocks("toml") if "[project." not in b]


def test_docs_have_snippets() -> None:
    # The parametrized tests below would pass vacuously if the fences were renamed.
    assert len(SYMBI_BLOCKS) >= 4 and len(TOML_BLOCKS) >= 5


@pytest.mark.parametrize(("where", "body"), SYMBI_BLOCKS, ids=[w for w, _ in SYMBI_BLOCKS])
def test_symbi_snippet_checks_clean_and_is_formatted(where: str, body: str, tmp_path: Path) -> None:
    src = tmp_path / "snippet.symbi"
    src.write_text(body, encoding="utf-8")
    runner = CliRunner()
    checked = runner.invoke(symbic_cli, ["check", "--format", "concise", str(src)])
    assert checked.exit_code == 0, f"{where}: {checked.output}"
    assert "error[" not in checked.output, where
    formatted = runner.invoke(symbic_cli, ["fmt", "--check", str(src)])
    assert formatted.exit_code == 0, f"{where} is not in `symbic fmt` layout"


@pytest.mark.parametrize(("where", "body"), TOML_BLOCKS, ids=[w for w, _ in TOML_BLOCKS])
def test_toml_snippet_loads(where: str, body: str, tmp_path: Path) -> None:
    path = tmp_path / "symbi.toml"
    path.write_text(body, encoding="utf-8")
    env = {name: "value-" + name.lower() for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", body)}
    config = load_config(path, env=env)  # raises ConfigError on an unknown key or bad value
    assert config.source == path, where


def test_readme_configuration_snippet_shows_the_defaults(tmp_path: Path) -> None:
    body = readme_block_after("### Configuration")
    path = tmp_path / "symbi.toml"
    path.write_text(body, encoding="utf-8")
    shown, default = load_config(path, env={}), load_config(None, env={})
    assert shown.scheduler == default.scheduler
    assert shown.store_path == default.store_path and shown.data_dir == default.data_dir


def test_quick_start_is_exactly_make_demo_and_make_test() -> None:
    assert readme_block_after("## Quick start") == "make demo\nmake test\n"


def test_readme_diagnostic_example_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = readme_block_after("`symbic check jobs.symbi`").splitlines()
    monkeypatch.chdir(tmp_path)
    Path("jobs.symbi").write_text('schedule {\n  name: "nightly"\n  agent: "echo"\n'
                                  '  cron: "0 25 * * *"\n}\n')
    result = CliRunner().invoke(symbic_cli, ["check", "--color", "never", "jobs.symbi"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == shown[:-1]
    assert result.stderr.splitlines() == shown[-1:]


def test_webhook_verify_snippet_accepts_real_signatures() -> None:
    (_, code), = [b for b in blocks("python") if "def verify" in b[1]]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README snippet
    verify = namespace["verify"]
    assert callable(verify)
    body = b'{"job":{"name":"daily-report"},"output":"ok"}'
    assert verify(body, sign("s3cret", body), "s3cret") is True
    assert verify(body + b" ", sign("s3cret", body), "s3cret") is False
    assert verify(body, sign("other", body), "s3cret") is False
    assert verify(body, None, "s3cret") is False


# ------------------------------------------------------------------ README command tables

ROW = re.compile(r"^\| `(symbic|symbi) ([^|]*(?:\\\|[^|]*)*)\|(.*)\|\s*$", re.M)


def _command(group: click.Group, words: list[str]) -> click.Command:
    cmd: click.Command = group
    for word in words:
        assert isinstance(cmd, click.Group), words
        cmd = cmd.commands[word]
    return cmd


def _named_commands(prog: str, first_cell: str) -> list[click.Command]:
    """The commands a table row names: `symbi cron pause JOB` / `resume JOB` → pause, resume."""
    root = symbic_cli if prog == "symbic" else symbi_cli
    pieces = [p.strip(" `") for p in first_cell.split(" / ")]
    words = [w for w in pieces[0].split() if re.fullmatch(r"[a-z]+", w)]
    path: list[str] = []
    for w in words:  # the leading words that are subcommands
        cmd = _command(root, path)
        if isinstance(cmd, click.Group) and w in cmd.commands:
            path.append(w)
        else:
            break
    found = [_command(root, path)]
    for piece in pieces[1:]:  # siblings of the last word
        head = piece.split()[0]
        parent = _command(root, path[:-1])
        assert isinstance(parent, click.Group) and head in parent.commands, piece
        found.append(parent.commands[head])
    return found


def _readme_rows() -> list[tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    rows = []
    for m in ROW.finditer(text):
        first, rest = m.group(2).split("|", 1) if "` |" in m.group(2) else (m.group(2), "")
        rows.append((m.group(1), first, rest + m.group(3)))
    return rows


README_ROWS = _readme_rows()


def test_readme_tables_list_every_command() -> None:
    named = {(prog, c.name) for prog, first, _ in README_ROWS for c in _named_commands(prog, first)}
    for prog, group in (("symbic", symbic_cli), ("symbi", symbi_cli)):
        for cmd in group.commands.values():
            subs = cmd.commands.values() if isinstance(cmd, click.Group) else [cmd]
            for sub in subs:
                assert (prog, sub.name) in named, f"`{prog} … {sub.name}` is not in the README"
    assert ("symbi", "approve") in named and ("symbi", "reject") in named


@pytest.mark.parametrize(("prog", "first", "rest"), README_ROWS,
                         ids=[f"{p} {f.split('`')[0].strip()}" for p, f, _ in README_ROWS])
def test_readme_row_flags_exist(prog: str, first: str, rest: str) -> None:
    commands = _named_commands(prog, first)
    opts = {o for c in commands for p in c.params for o in getattr(p, "opts", [])}
    opts |= {o for c in commands for p in c.params for o in getattr(p, "secondary_opts", [])}
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", first + " " + rest))
    missing = sorted(f for f in flags if f not in opts)
    assert not missing, f"`{prog} {first.strip()}`: no such option {missing}"
