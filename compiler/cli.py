"""``symbic``: check and compile ``.symbi`` files, explain cron expressions.

Exit status: 0 clean (warnings allowed), 1 errors in the sources (or warnings with
``--strict``), 2 usage error, 3 unreadable input / unwritable output, 70 internal error.
Heavy modules (sqlite3, the bundle writer, the cron library) are imported only by the
commands that need them, so ``symbic check`` starts fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from compiler import __version__
from compiler.render import FORMATS

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_IO, EXIT_INTERNAL = 0, 1, 2, 3, 70

F = TypeVar("F", bound=Callable[..., Any])


def _guard(f: F) -> F:
    """Turn an unexpected exception into a short "internal error" message and exit 70: a user
    never sees a traceback (set SYMBIC_DEBUG=1 to get one)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            # The reader went away (e.g. `symbic check … | head`): nothing left to say.
            sys.stderr.close()
            sys.exit(EXIT_ERRORS)
        except Exception as e:  # noqa: BLE001 - the whole point: nothing escapes as a traceback
            if os.environ.get("SYMBIC_DEBUG"):
                raise
            click.echo(
                f"symbic: internal error: {type(e).__name__}: {e}\n"
                "This is a bug in symbic; please report it with the input that caused it "
                "(SYMBIC_DEBUG=1 shows the traceback).",
                err=True,
            )
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def _use_color(choice: str, stream: Any) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class _InstalledChannels(Collection[str]):
    """Names of custom delivery channels installed as ``symbi.channels`` entry points, looked
    up on first use: scanning installed distributions costs more than checking a typical file,
    and most files use only built-in channels."""

    def __init__(self) -> None:
        self._names: frozenset[str] | None = None

    def _load(self) -> frozenset[str]:
        if self._names is None:
            from importlib.metadata import entry_points

            try:
                self._names = frozenset(ep.name for ep in entry_points(group="symbi.channels"))
            except Exception:  # noqa: BLE001 - a broken distribution must not break checking
                self._names = frozenset()
        return self._names

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def _installed_channels() -> _InstalledChannels:
    return _InstalledChannels()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


_FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="full", show_default=True,
    help="How diagnostics are printed: full (source snippet with carets), concise (one line "
         "each), json, sarif (SARIF 2.1.0 for code scanning), github (workflow annotations).",
)
_COLOR_OPTION = click.option(
    "--color", "color", type=click.Choice(["auto", "always", "never"]), default="auto",
    show_default=True, help="Colour diagnostics (auto: only on a terminal; NO_COLOR disables).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="symbic", message="%(prog)s %(version)s")
def cli() -> None:
    """The symbi compiler: check and compile .symbi schedule/agent files.

    \b
    Examples:
      symbic check examples/                 check every .symbi/.dsl file below a directory
      symbic check --format json jobs.symbi  machine-readable diagnostics
      symbic compile src/ -o bundle.db       write a deployable bundle
      symbic explain "0 9 * * 1-5" --tz Europe/Berlin -n 3
      symbic fmt --check src/                exit 1 if a file is not canonically formatted

    Exit status: 0 clean (warnings allowed), 1 errors in the sources, 2 usage error,
    3 unreadable input or unwritable output.
    """


def _read_stdin(paths: tuple[str, ...]) -> bytes | None:
    if "-" not in paths:
        return None
    return sys.stdin.buffer.read()


def _emit(result: Any, fmt: str, color_choice: str) -> None:
    from compiler.render import render

    color = _use_color(color_choice, sys.stdout) and fmt in ("full", "concise")
    if result.diagnostics or fmt in ("json", "sarif"):
        # click strips ANSI codes off a non-terminal unless told the colour is wanted.
        click.echo(render(result.diagnostics, fmt, color=color, tool_version=__version__), nl=False, color=color)


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@_FORMAT_OPTION
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--stdin-filename", default="<stdin>", show_default=True, metavar="NAME",
              help="The file name shown in diagnostics for `-` (standard input).")
@_COLOR_OPTION
@_guard
def check(paths: tuple[str, ...], fmt: str, strict: bool, stdin_filename: str, color: str) -> None:
    """Check files for errors (diagnostics only, nothing is written).

    PATH is a file, a directory (searched recursively for *.symbi and *.dsl), or `-` for
    standard input. All paths are checked together, as one compilation: schedules may use
    agents and policies of any of the files.

    \b
    Examples:
      symbic check jobs.symbi
      symbic check examples/ --strict
      cat jobs.symbi | symbic check - --stdin-filename jobs.symbi --format concise
    """
    from compiler.compile import collect_paths, compile_paths

    stdin = _read_stdin(paths)
    found, missing = collect_paths(p for p in paths if p != "-")
    if not found and not missing and stdin is None:
        click.echo(f"symbic: warning: no .symbi or .dsl files found in {' '.join(paths)}", err=True)
        sys.exit(EXIT_OK)
    result = compile_paths(list(paths), mode="check", now=datetime.now(UTC), stdin=stdin,
                           stdin_filename=stdin_filename, custom_channels=_installed_channels())
    _emit(result, fmt, color)
    n_files = len(found) + (stdin is not None)
    if fmt in ("full", "concise"):
        if result.diagnostics:
            click.echo(f"checked {_plural(n_files, 'file')}: {_plural(result.errors, 'error')}, "
                       f"{_plural(result.warnings, 'warning')}", err=True)
        else:
            click.echo(f"checked {_plural(n_files, 'file')}: no problems", err=True)
    if result.unreadable:
        sys.exit(EXIT_IO)
    if result.errors or (strict and result.warnings):
        sys.exit(EXIT_ERRORS)


@cli.command(name="compile")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="BUNDLE.db",
              help="The bundle file to write (replaced atomically).")
@click.option("--allow-undefined-agents", is_flag=True,
              help="Let schedules name agents that are not defined (a warning instead of an error).")
@_FORMAT_OPTION
@click.option("--stdin-filename", default="<stdin>", show_default=True, metavar="NAME",
              help="The file name recorded for `-` (standard input).")
@_COLOR_OPTION
@_guard
def compile_cmd(paths: tuple[str, ...], output: str, allow_undefined_agents: bool, fmt: str,
                stdin_filename: str, color: str) -> None:
    """Compile files into a bundle (one SQLite file) for `symbi deploy` / `symbi up`.

    All PATHs form one compilation; standard-library agents (echo, system_health) are
    always available. Nothing is written when there are errors. Compiling the same inputs
    twice gives byte-identical bundles.

    \b
    Examples:
      symbic compile examples/ -o bundle.db
      symbic compile jobs.symbi agents.symbi -o dist/jobs.db --format github
    """
    from compiler.compile import collect_paths, compile_paths

    stdin = _read_stdin(paths)
    found, missing = collect_paths(p for p in paths if p != "-")
    if not found and not missing and stdin is None:
        raise click.UsageError(f"no .symbi or .dsl files found in {' '.join(paths)}")
    result = compile_paths(list(paths), mode="compile", allow_undefined_agents=allow_undefined_agents,
                           now=datetime.now(UTC), stdin=stdin, stdin_filename=stdin_filename,
                           custom_channels=_installed_channels())
    _emit(result, fmt, color)
    if result.unreadable:
        sys.exit(EXIT_IO)
    if result.errors:
        if fmt in ("full", "concise"):
            click.echo(f"not compiled: {_plural(result.errors, 'error')}; {output} was not written", err=True)
        sys.exit(EXIT_ERRORS)

    from compiler.bundle import BundleError, write_bundle

    try:
        write_bundle(output, list(result.jobs), list(result.agents), list(result.sources), __version__)
    except BundleError as e:
        click.echo(f"symbic: error: {e}", err=True)
        sys.exit(EXIT_IO)
    n_files = len(found) + (stdin is not None)
    click.echo(f"compiled {_plural(len(result.jobs), 'job')}, {_plural(len(result.agents), 'agent')} "
               f"from {_plural(n_files, 'file')} → {output}", err=True)


def _write_atomically(path: Any, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a reader sees the old or the new file, never a
    partial one; the file keeps its permission bits."""
    import stat
    import tempfile

    mode = stat.S_IMODE(os.stat(path).st_mode)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".symbic-fmt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@cli.command(name="fmt")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--check", is_flag=True,
              help="Change nothing; list the files that would be reformatted and exit 1 if any.")
@click.option("--diff", "show_diff", is_flag=True,
              help="Change nothing; print a unified diff of the changes instead.")
@click.option("--stdin-filename", default="<stdin>", show_default=True, metavar="NAME",
              help="The file name shown in diagnostics for `-` (standard input).")
@_COLOR_OPTION
@_guard
def fmt_cmd(paths: tuple[str, ...], check: bool, show_diff: bool, stdin_filename: str, color: str) -> None:
    """Format files in the canonical style (comments kept; formatting twice changes nothing).

    PATH is a file, a directory (searched recursively for *.symbi and *.dsl), or `-`: standard
    input, formatted to standard output. Files are rewritten in place (atomically) unless
    --check or --diff is given. A file with syntax errors is never touched: its diagnostics
    are printed and the exit status is 1.

    \b
    Examples:
      symbic fmt examples/             format every file below a directory
      symbic fmt --check .             in CI: exit 1 if a file is not formatted
      symbic fmt --diff jobs.symbi     show what would change
      cat jobs.symbi | symbic fmt -    format standard input to standard output
    """
    from compiler.compile import collect_paths, decode_source
    from compiler.fmt import format_source, unified_diff
    from compiler.render import render

    found, missing = collect_paths(p for p in paths if p != "-")
    if not found and not missing and "-" not in paths:
        click.echo(f"symbic: warning: no .symbi or .dsl files found in {' '.join(paths)}", err=True)
        sys.exit(EXIT_OK)
    jobs: list[tuple[str, Any]] = [("-", None)] if "-" in paths else []
    jobs += found
    unreadable = len(missing)
    for arg in missing:
        click.echo(f"symbic: error: cannot read {arg}: no such file or directory", err=True)
    changed = unchanged = failed = 0
    for name, path in jobs:
        if path is None:
            data = sys.stdin.buffer.read()
            name = stdin_filename
        else:
            try:
                data = path.read_bytes()
            except OSError as e:
                click.echo(f"symbic: error: cannot read {name}: {(e.strerror or str(e)).lower()}", err=True)
                unreadable += 1
                continue
        source, problem = decode_source(name, data)
        result = None if problem is not None else format_source(source)
        if result is None or result.text is None:
            diags = [problem] if problem is not None else list(result.diagnostics if result else [])
            paint = _use_color(color, sys.stderr)
            click.echo(render(diags, "full", color=paint), err=True, nl=False, color=paint)
            if problem is not None and problem.code == "invalid-encoding":
                unreadable += 1
            else:
                failed += 1
            continue
        new = result.text.encode("utf-8")
        if new == data:
            unchanged += 1
            if path is None and not check and not show_diff:
                sys.stdout.buffer.write(new)
            continue
        changed += 1
        if show_diff:
            click.echo(unified_diff(source.text, result.text, name), nl=False)
        if check:
            if not show_diff:
                click.echo(f"would reformat {name}")
        elif path is None:
            if not show_diff:
                sys.stdout.buffer.write(new)
                sys.stdout.flush()
        elif not show_diff:
            try:
                _write_atomically(path, new)
            except OSError as e:
                click.echo(f"symbic: error: cannot write {name}: {(e.strerror or str(e)).lower()}", err=True)
                unreadable += 1
                continue
            click.echo(f"reformatted {name}", err=True)
    verb = "would be reformatted" if check or show_diff else "reformatted"
    summary = [f"{_plural(changed, 'file')} {verb}", f"{unchanged} already formatted"]
    if failed:
        summary.append(f"{failed} not formatted because of errors")
    if unreadable:
        summary.append(f"{unreadable} unreadable")
    click.echo(", ".join(summary), err=True)
    if unreadable:
        sys.exit(EXIT_IO)
    if failed or (check and changed):
        sys.exit(EXIT_ERRORS)


def _parse_from(text: str | None, tz: Any) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    s = text.strip()
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO-8601 date-time (e.g. 2030-01-31T09:00:00+01:00)",
                                 param_hint="'--from'") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


@cli.command()
@click.argument("expression", metavar='"CRON"')
@click.option("--tz", "tz_name", default="UTC", show_default=True, metavar="ZONE",
              help="IANA time zone in which the expression is evaluated.")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many fire times to show.")
@click.option("--from", "start", default=None, metavar="TIME",
              help="Show fire times strictly after this ISO-8601 time (naive = in --tz). Default: now.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: description and fire times; json: the same as an object.")
@_guard
def explain(expression: str, tz_name: str, count: int, start: str | None, fmt: str) -> None:
    """Describe a cron expression and list its next fire times.

    \b
    Examples:
      symbic explain "*/15 9-17 * * mon-fri"
      symbic explain "30 2 * * *" --tz Europe/Berlin --from 2030-03-30T00:00 -n 3
      symbic explain "@daily" --format json
    """
    import json
    import zoneinfo

    from compiler.cron import describe_cron, parse_cron
    from compiler.validate import suggest_timezone, timezone_valid

    if not timezone_valid(tz_name):
        guess = suggest_timezone(tz_name)
        hint = f" (did you mean {guess}?)" if guess else " (use an IANA name such as Europe/Berlin)"
        raise click.BadParameter(f"unknown time zone {tz_name!r}{hint}", param_hint="'--tz'")
    tz = zoneinfo.ZoneInfo(tz_name)
    after = _parse_from(start, tz)
    expr, problems = parse_cron(expression)
    if expr is None or problems:
        from compiler.diagnostics import Severity, diag
        from compiler.render import render
        from compiler.source import SourceFile, Span

        src = SourceFile("<cron>", expression)
        diags = [diag(p.code if _known(p.code) else "invalid-cron", p.message, src, Span(p.start, p.end),
                      help=p.help or None) for p in problems]
        if diags:
            click.echo(render(diags, "full", color=_use_color("auto", sys.stderr)), err=True, nl=False)
        if expr is None or any(d.sev is Severity.ERROR for d in diags):
            sys.exit(EXIT_ERRORS)
    times = expr.next_n(after, tz, count)
    description = describe_cron(expr)
    if fmt == "json":
        doc = {
            "expression": expression,
            "timezone": tz_name,
            "description": description,
            "after": after.astimezone(tz).isoformat(),
            "next": [t.astimezone(tz).isoformat() for t in times],
        }
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    click.echo(f"{expression}  ({tz_name})")
    click.echo(description)
    click.echo(f"next {_plural(len(times), 'fire time')} after {after.astimezone(tz).isoformat()}:")
    for t in times:
        local = t.astimezone(tz)
        click.echo(f"  {local.isoformat()}  {local.strftime('%a')}")
    if len(times) < count:
        click.echo("  (no further fire times)")


def _known(code: str) -> bool:
    from compiler.diagnostics import CODES

    return code in CODES


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``symbic``)."""
    try:
        cli.main(args=argv, prog_name="symbic")
    except Exception as e:  # noqa: BLE001 - last line of defence against a traceback
        if os.environ.get("SYMBIC_DEBUG"):
            raise
        click.echo(f"symbic: internal error: {type(e).__name__}: {e}", err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
