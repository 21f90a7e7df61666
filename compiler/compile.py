"""Orchestration of one compilation: read → parse → validate → lower (used by check and compile).

This is an edge module: it reads files (and the standard library's ``*.symbi`` through
``importlib.resources``). Everything it calls is pure.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from compiler.diagnostics import Diagnostic, Severity, diag
from compiler.ir import AgentDef, JobDef
from compiler.source import SourceFile, Span

#: File suffixes collected from directories (SPEC §1.1).
SUFFIXES = (".symbi", ".dsl")
#: Codes that mean "an input could not be read" (exit status 3).
UNREADABLE_CODES = frozenset({"unreadable-input", "invalid-encoding"})


@dataclass(frozen=True)
class CompileResult:
    jobs: tuple[JobDef, ...]
    agents: tuple[AgentDef, ...]
    diagnostics: tuple[Diagnostic, ...]
    sources: tuple[SourceFile, ...]  # every source read (user files, then stdlib files used)

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.sev is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for d in self.diagnostics if d.sev is Severity.WARNING)

    @property
    def unreadable(self) -> bool:
        return any(d.code in UNREADABLE_CODES for d in self.diagnostics)


# ---------------------------------------------------------------- inputs


def decode_source(name: str, data: bytes) -> tuple[SourceFile, Diagnostic | None]:
    """Bytes → SourceFile; invalid UTF-8 gives an `invalid-encoding` diagnostic at the first
    bad byte (the text is then decoded with replacement characters, for the snippet)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is not part of the text
    try:
        return SourceFile(name, data.decode("utf-8")), None
    except UnicodeDecodeError as e:
        offset = len(data[: e.start].decode("utf-8", "replace"))
        src = SourceFile(name, data.decode("utf-8", "replace"))
        d = diag("invalid-encoding", f"the file is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})",
                 src, Span(offset, offset + 1), help="save the file as UTF-8")
        return src, d


def read_source(path: Path, name: str | None = None) -> tuple[SourceFile, Diagnostic | None]:
    """Read one file; an unreadable or non-UTF-8 file gives a diagnostic instead of raising."""
    shown = name or str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        src = SourceFile(shown, "")
        reason = e.strerror or str(e)
        if isinstance(e, IsADirectoryError):
            reason = "is a directory"
        return src, diag("unreadable-input", f"cannot read {shown}: {reason.lower()}", src, Span(0, 0))
    return decode_source(shown, data)


def collect_paths(paths: Iterable[str]) -> tuple[list[tuple[str, Path]], list[str]]:
    """Expand files and directories (recursively ``*.symbi``/``*.dsl``, hidden directories
    skipped) into (display name, path) pairs, sorted within each directory; also returns the
    arguments that do not exist."""
    found: list[tuple[str, Path]] = []
    missing: list[str] = []
    seen: set[Path] = set()
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            hits: list[Path] = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                hits.extend(Path(root) / f for f in files if f.endswith(SUFFIXES) and not f.startswith("."))
            for h in sorted(hits):
                if h.resolve() not in seen:
                    seen.add(h.resolve())
                    found.append((str(h), h))
        elif p.exists():
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append((arg, p))
        else:
            missing.append(arg)
    return found, missing


# ---------------------------------------------------------------- the standard library


def stdlib_agent_sources() -> list[SourceFile]:
    """The standard library's agent files (``stdlib/agents/*.symbi``), sorted by name."""
    return list(_stdlib_sources())


@lru_cache(maxsize=1)
def _stdlib_sources() -> tuple[SourceFile, ...]:
    from importlib.resources import files

    root = files("stdlib.agents")
    entries = sorted((e for e in root.iterdir() if e.name.endswith(".symbi")), key=lambda e: e.name)
    return tuple(SourceFile(f"stdlib/agents/{e.name}", e.read_text(encoding="utf-8")) for e in entries)


@lru_cache(maxsize=1)
def stdlib_agents() -> dict[str, tuple[AgentDef, SourceFile]]:
    """Name → (lowered agent, its source) for every standard-library agent."""
    from compiler.lower import lower_agent
    from compiler.parser import parse_source
    from compiler.validate import validate_modules

    out: dict[str, tuple[AgentDef, SourceFile]] = {}
    for src in _stdlib_sources():
        module, _ = parse_source(src)
        validated = validate_modules([(src, module)])
        for spec in validated.agents:
            out[spec.name] = (lower_agent(spec), src)
    return out


# ---------------------------------------------------------------- compilation


def compile_sources(
    sources: Sequence[SourceFile],
    *,
    mode: str = "check",
    allow_undefined_agents: bool = False,
    custom_channels: Collection[str] = frozenset(),
    now: datetime | None = None,
    extra_diagnostics: Sequence[Diagnostic] = (),
) -> CompileResult:
    """Parse, validate and (when there are no errors) lower ``sources`` as ONE compilation.

    ``mode`` "check": an undefined agent is a warning; "compile": an error unless
    ``allow_undefined_agents``. Standard-library agents always resolve; those a job uses are
    added to the result (with their source) unless the compilation defines the same name."""
    from compiler.lower import lower
    from compiler.parser import parse_source
    from compiler.validate import validate_modules

    diags: list[Diagnostic] = list(extra_diagnostics)
    modules = []
    for src in sources:
        module, problems = parse_source(src)
        diags.extend(problems)
        if not module.items and not problems and not any(d.code == "empty-file" for d in problems):
            diags.append(diag("empty-file", "the file defines nothing", src, Span(0, 0),
                              help="add a `schedule` or `agent` block"))
        modules.append((src, module))
    std = stdlib_agents()
    if mode == "compile" and not allow_undefined_agents:
        severity: Severity | None = Severity.ERROR
    else:
        severity = Severity.WARNING
    validated = validate_modules(modules, custom_channels=custom_channels, stdlib_agents=frozenset(std),
                                 now=now, undefined_agent=severity)
    diags.extend(validated.diagnostics)
    diags.sort(key=Diagnostic.sort_key)
    if any(d.sev is Severity.ERROR for d in diags):
        return CompileResult((), (), tuple(diags), tuple(sources))
    jobs, agents = lower(validated)
    own = {a.name for a in agents}
    used_std = sorted({j.agent for j in jobs if j.agent not in own and j.agent in std})
    agents = sorted([*agents, *(std[n][0] for n in used_std)], key=lambda a: a.name)
    std_sources = {std[n][1].name: std[n][1] for n in used_std}
    all_sources = (*sources, *(std_sources[k] for k in sorted(std_sources)))
    return CompileResult(tuple(jobs), tuple(agents), tuple(diags), all_sources)


def _keep(src: SourceFile, problem: Diagnostic | None, sources: list[SourceFile],
          problems: list[Diagnostic]) -> None:
    """A readable source is compiled; an unreadable one only contributes its diagnostic."""
    if problem is None:
        sources.append(src)
    else:
        problems.append(problem)


def compile_paths(
    paths: Sequence[str],
    *,
    mode: str = "check",
    allow_undefined_agents: bool = False,
    custom_channels: Collection[str] = frozenset(),
    now: datetime | None = None,
    stdin: bytes | None = None,
    stdin_filename: str = "<stdin>",
) -> CompileResult:
    """Read ``paths`` (files, directories; ``-`` = ``stdin``) and compile them as one unit.

    Unreadable inputs become diagnostics (`unreadable-input`, `invalid-encoding`); the rest
    is still checked."""
    sources: list[SourceFile] = []
    problems: list[Diagnostic] = []
    file_args = [p for p in paths if p != "-"]
    found, missing = collect_paths(file_args)
    for arg in missing:
        src = SourceFile(arg, "")
        problems.append(diag("unreadable-input", f"cannot read {arg}: no such file or directory", src, Span(0, 0)))
    stdin_done = False
    for arg in paths:
        if arg == "-" and not stdin_done:
            stdin_done = True
            src, d = decode_source(stdin_filename, stdin or b"")
            _keep(src, d, sources, problems)
    for name, path in found:
        src, d = read_source(path, name)
        _keep(src, d, sources, problems)
    return compile_sources(sources, mode=mode, allow_undefined_agents=allow_undefined_agents,
                           custom_channels=custom_channels, now=now, extra_diagnostics=problems)
