"""`symbi`: run compiled bundles and manage scheduled jobs.

Every command works directly on the state database (``.symbi/state.db`` by default), so a
running ``symbi up`` on the same file notices changes within one tick. Errors go to stderr as
one ``error: …`` message with a non-zero exit status and never a traceback:

- ``1`` the operation failed (unknown job, a run that did not succeed, a store problem);
- ``2`` usage: a bad flag, a bad ``symbi.toml``, invalid job JSON;
- ``3`` an input file that cannot be read;
- ``70`` an internal error (a bug; ``SYMBI_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from compiler import __version__

if TYPE_CHECKING:
    from compiler.ir import AgentDef, JobDef
    from runtime.config import Config
    from runtime.store import JobRow, RunRow, SqliteStore

RUN_STATUSES = ("pending", "awaiting_approval", "running", "succeeded", "failed", "timed_out",
                "denied", "skipped", "missed", "interrupted", "cancelled")
JOB_STATUSES = ("active", "paused", "completed", "dead_letter")
EXIT_ERROR, EXIT_USAGE, EXIT_UNREADABLE, EXIT_INTERNAL = 1, 2, 3, 70
WATCH_SECONDS = 5.0
SUMMARY_JOBS = 8  # jobs listed in `symbi up`'s start-up summary


class CliError(click.ClickException):
    """A user-facing error: ``error: message`` on stderr, non-zero exit, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default

    def show(self, file: Any = None) -> None:
        """Print the message (click calls this)."""
        click.echo(f"error: {self.format_message()}", err=True)


class Ctx:
    """Lazily loaded configuration and store for one CLI invocation."""

    def __init__(self, config_path: str | None, store_path: str | None):
        self.config_path = config_path
        self.store_path = store_path
        self._config: Config | None = None
        self._store: SqliteStore | None = None

    @property
    def config(self) -> Config:
        """The configuration (flags > environment > file > defaults); a bad file exits 2."""
        if self._config is None:
            from runtime.config import ConfigError, load_config

            overrides: dict[str, Any] = {}
            if self.store_path:
                overrides["store_path"] = self.store_path
            try:
                self._config = load_config(
                    Path(self.config_path) if self.config_path else None,
                    env=os.environ,
                    overrides=overrides,
                )
            except ConfigError as e:
                raise CliError(str(e), EXIT_USAGE) from None
        return self._config

    @property
    def store_file(self) -> Path:
        """Where the state database is (whether or not it exists)."""
        return Path(self.config.store_path)

    def store(self, *, create: bool = False) -> SqliteStore:
        """The open state database. Only commands that write definitions (``up``, ``deploy``,
        ``cron add``) create it; the others report a missing one."""
        if self._store is None:
            self._store = open_store(self.store_file, create=create)
        return self._store

    def close(self) -> None:
        """Close the store if it was opened."""
        if self._store is not None:
            self._store.close()
            self._store = None


def open_store(path: Path, *, create: bool) -> SqliteStore:
    """Open the state database at ``path`` with errors a user understands. A file this call
    creates is removed again if it cannot be made into a state database (nothing is left
    behind by a failed command)."""
    from runtime.store import SqliteStore, StoreError

    if path.is_dir():
        raise CliError(f"the state database {path} is a directory; pass the path of a file "
                       "with --store")
    created = False
    if not path.exists():
        if not create:
            raise CliError(f"no state database at {path} (deploy a bundle with `symbi deploy` "
                           "or start `symbi up` first, or pass --store PATH)")
        _check_parent(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise CliError(f"cannot create the state database {path}: "
                           f"{(e.strerror or str(e)).lower()}") from None
    try:
        return SqliteStore.open(path)
    except StoreError as e:
        if created:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        raise CliError(str(e)) from None


def _check_parent(path: Path) -> None:
    """Create the state database's directory, or explain why it cannot be."""
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise CliError(f"cannot create the state database {path}: {probe} is a file, not a "
                       "directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create the state database {path}: cannot create directory "
                       f"{parent}: {(e.strerror or str(e)).lower()}") from None


pass_ctx = click.make_pass_decorator(Ctx)


def _job(c: Ctx, ref: str) -> JobRow:
    job = c.store().get_job(ref)
    if job is None:
        from compiler.diagnostics import did_you_mean

        names = [j.name for j in c.store().list_jobs()]
        hint = did_you_mean(ref, names)
        raise CliError(f"no job with id or name `{ref}`"
                       + (f" (did you mean `{hint}`?)" if hint else " (see `symbi cron list`)"))
    return job


def _store_call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    from runtime.store import StoreError

    try:
        return fn(*args, **kw)
    except StoreError as e:
        raise CliError(str(e)) from None


def _now() -> datetime:
    return datetime.now(UTC)


def _actor() -> str:
    """``cli:<user>`` for audit events."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"cli:{user}"


def _schedule_text(d: JobDef) -> str:
    """The cron expression (with its zone unless UTC), or ``at <local time>``."""
    from runtime.output import local_time

    if d.cron:
        return d.cron + (f" ({d.timezone})" if d.timezone != "UTC" else "")
    try:
        return f"at {local_time(datetime.fromisoformat(d.at or ''))}"
    except ValueError:
        return f"at {d.at}"


def _meaning(d: JobDef) -> str:
    """Plain-English schedule, e.g. ``every 5 seconds`` or ``once, at …``."""
    from compiler.cron import describe_cron, parse_cron

    if d.cron:
        expr, _ = parse_cron(d.cron)
        if expr is None:
            return "-"
        text = describe_cron(expr)
        return text + (f" ({d.timezone})" if d.timezone != "UTC" else "")
    if d.at:
        return "once"
    return "-"


format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
    show_default=True, help="Output format; json is complete and stable.",
)


# ------------------------------------------------------------------ root


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             epilog="Exit status: 0 ok, 1 failed, 2 usage or configuration error, "
                    "3 unreadable input.")
@click.version_option(__version__, "--version", "-V", prog_name="symbi")
@click.option("--config", "config_path", metavar="FILE", envvar="SYMBI_CONFIG",
              help="symbi.toml to use (default: $SYMBI_CONFIG or ./symbi.toml).")
@click.option("--store", "store_path", metavar="PATH",
              help="State database (default: [store] path, or .symbi/state.db).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, store_path: str | None) -> None:
    """Run scheduled AI-agent jobs compiled by `symbic`.

    \b
    Quick tour:
      symbi up examples/              compile, deploy and run the scheduler
      symbi cron list                 jobs, their status and next run
      symbi cron status JOB --history 5
      symbi cron run JOB --input "check prod"
      symbi audit verify              check the tamper-evident audit chain
    """
    ctx.obj = Ctx(config_path, store_path)
    ctx.call_on_close(ctx.obj.close)


# ------------------------------------------------------------------ deploy / up / run


def _load_definitions(paths: Sequence[str], allow_undefined: bool = False
                      ) -> tuple[list[JobDef], list[AgentDef], str]:
    """Jobs and agents from one bundle file or from .symbi sources (compiled now), and a
    description of where they came from. Diagnostics go to stderr; errors exit non-zero."""
    from compiler.bundle import BundleError, read_bundle

    first = Path(paths[0])
    if len(paths) == 1 and first.is_file() and first.suffix not in (".symbi", ".dsl"):
        try:
            b = read_bundle(first)
        except BundleError as e:
            raise CliError(str(e)) from None
        return list(b.jobs), list(b.agents), str(first)
    from compiler.compile import compile_paths
    from compiler.render import render

    result = compile_paths(list(paths), mode="compile", allow_undefined_agents=allow_undefined)
    if result.diagnostics:
        text = render(result.diagnostics, "full", color=sys.stderr.isatty())
        if text:
            click.echo(text, err=True, nl=not text.endswith("\n"))
    if result.unreadable:
        raise CliError("cannot read the input; nothing was deployed", EXIT_UNREADABLE)
    if result.errors:
        n = result.errors
        raise CliError(f"compilation failed with {n} error{'s' * (n != 1)}; nothing was deployed")
    n = len([s for s in result.sources if not s.name.startswith("stdlib/")])
    return list(result.jobs), list(result.agents), f"{n} source file{'s' * (n != 1)}"


def _print_deploy(report: Any, origin: str, store_path: Path) -> None:
    counts = [f"{len(getattr(report, k))} {k}" for k in ("created", "updated", "unchanged")
              if getattr(report, k)]
    if report.pruned:
        counts.append(f"{len(report.pruned)} {'paused' if report.prune == 'pause' else 'removed'}")
    total = len(report.created) + len(report.updated) + len(report.unchanged)
    click.echo(f"deployed {origin} to {store_path}: {total} job{'s' * (total != 1)} ("
               + (", ".join(counts) or "nothing") + ")", err=True)
    pruned = "paused" if report.prune == "pause" else "removed"
    for label, names in (("created", report.created), ("updated", report.updated),
                         (pruned, report.pruned)):
        if names and (label != "created" or len(names) <= 6):
            shown = ", ".join(names[:12]) + (f", … ({len(names) - 12} more)" if len(names) > 12 else "")
            click.echo(f"  {label + ':':<9} {shown}", err=True)


class _PruneAwareCommand(click.Command):
    """``--prune`` takes an optional value (``--prune`` / ``--prune=pause``); click would read
    ``--prune bundle.db`` as the value ``bundle.db``. A bare ``--prune`` followed by anything but
    ``delete``/``pause`` is the flag form, so it is rewritten before parsing."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        fixed: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--prune" and (i + 1 >= len(args) or args[i + 1] not in ("delete", "pause")):
                fixed.append("--prune=delete")
            else:
                fixed.append(arg)
        return super().parse_args(ctx, fixed)


prune_option = click.option(
    "--prune", type=click.Choice(["delete", "pause"]), is_flag=False, flag_value="delete",
    default=None,
    help="Remove jobs that came from an earlier bundle but are not in this one "
         "(--prune=pause pauses them instead). Jobs added with `cron add` are kept.")


@cli.command(cls=_PruneAwareCommand)
@click.argument("bundle", nargs=-1, required=True, type=click.Path(), metavar="BUNDLE|PATH…")
@prune_option
@pass_ctx
def deploy(c: Ctx, bundle: tuple[str, ...], prune: str | None) -> None:
    """Upsert the jobs and agents of BUNDLE into the state database, by name.

    Deploying the same bundle twice changes nothing; a changed job keeps its id, history and
    counters. .symbi files or directories are compiled first.
    """
    _ = c.config  # a bad configuration is reported before anything is read or written
    jobs, agents, origin = _load_definitions(bundle)
    report = _store_call(c.store(create=True).deploy, jobs, agents, prune=prune, actor=_actor())
    _print_deploy(report, origin, c.store_file)


@cli.command(cls=_PruneAwareCommand)
@click.argument("paths", nargs=-1, type=click.Path(), metavar="[BUNDLE | PATH…]")
@click.option("--no-standby", is_flag=True,
              help="Exit (status 1) instead of waiting when another scheduler holds the lease.")
@prune_option
@click.option("--allow-undefined-agents", is_flag=True,
              help="Compile even if a schedule names an unknown agent (its runs fail).")
@click.option("--for", "run_for", metavar="DURATION",
              help="Stop cleanly after this long (e.g. 30s, 5m).")
@click.option("--quiet", "-q", is_flag=True, help="No per-run lines and no job summary.")
@click.option("--verbose", "-v", is_flag=True, help="Also print a line when a run starts.")
@click.option("--no-api", is_flag=True,
              help="Do not serve the HTTP API (default: on [api] host and port).")
@pass_ctx
def up(c: Ctx, paths: tuple[str, ...], no_standby: bool, prune: str | None,
       allow_undefined_agents: bool, run_for: str | None, quiet: bool, verbose: bool,
       no_api: bool) -> None:
    """Compile (if given sources), deploy, and run the scheduler until Ctrl-C or SIGTERM.

    PATHS is one bundle (from `symbic compile`) or .symbi/.dsl files and directories. Without
    PATHS the jobs already in the state database run. One line is printed per run.
    """
    from compiler.durations import parse_duration

    limit = None
    if run_for is not None:
        limit = parse_duration(run_for)
        if limit is None or limit <= 0:
            raise CliError(f"--for: expected a duration such as 30s or 5m, got {run_for!r}",
                           EXIT_USAGE)
    config = c.config
    loaded = _load_definitions(paths, allow_undefined_agents) if paths else None
    store = c.store(create=True)
    if loaded is not None:
        jobs, agents, origin = loaded
        report = _store_call(store.deploy, jobs, agents, prune=prune, actor=_actor())
        _print_deploy(report, origin, c.store_file)
    elif prune:
        raise CliError("--prune needs a bundle or sources to compare with", EXIT_USAGE)
    from runtime.scheduler import local_owner_id

    owner = local_owner_id()
    rows = store.list_jobs()
    printer = RunPrinter(quiet=quiet, verbose=verbose, store_path=c.store_file,
                         name_width=max((len(j.name) for j in rows), default=10))
    if not quiet:
        _print_summary(rows, config, c.store_file, owner, limit)
    code = asyncio.run(_serve(store, config, owner, printer, limit, standby=not no_standby,
                              api=not no_api))
    sys.exit(code)


def _print_summary(rows: list[JobRow], config: Config, store_path: Path, owner: str,
                   limit: float | None) -> None:
    from runtime.output import render_table, when_next

    now = _now()
    counts: dict[str, int] = {}
    for j in rows:
        counts[j.status] = counts.get(j.status, 0) + 1
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"
    sc = config.scheduler
    click.echo(f"symbi {__version__} · state {store_path} · scheduler {owner}", err=True)
    click.echo(f"{len(rows)} job{'s' * (len(rows) != 1)} ({by_status}) · max_concurrent_jobs "
               f"{sc.max_concurrent_jobs} · tick {sc.tick_interval_seconds:g}s", err=True)
    active = sorted((j for j in rows if j.status == "active" and j.next_run is not None),
                    key=lambda r: (r.next_run, r.name))
    if active:
        table = [[j.name, _schedule_text(j.definition), _meaning(j.definition),
                  when_next(j.next_run, now)] for j in active[:SUMMARY_JOBS]]
        click.echo(render_table(table, ["JOB", "SCHEDULE", "MEANING", "NEXT RUN"], indent=2),
                   err=True, nl=False)
        if len(active) > SUMMARY_JOBS:
            more = len(active) - SUMMARY_JOBS
            click.echo(f"  … and {more} more (symbi --store {store_path} cron list)", err=True)
    elif not rows:
        click.echo("no jobs yet: give a bundle or .symbi files (`symbi up examples/`), or add "
                   "one with `symbi cron add`", err=True)
    stop = f"stopping by itself after {_secs(limit)}; " if limit else ""
    click.echo(f"{stop}Ctrl-C to stop", err=True)


def _secs(seconds: float) -> str:
    """``2.5s``, ``30s``, ``1h30m``."""
    from compiler.durations import format_duration

    if 1 <= seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    return format_duration(seconds)


async def _serve(store: SqliteStore, config: Config, owner: str, printer: RunPrinter,
                 limit: float | None, *, standby: bool, api: bool = True) -> int:
    """Run the scheduler until a signal, ``--for`` or (without standby) a busy lease."""
    from runtime.clock import SystemClock
    from runtime.scheduler import Scheduler

    logging.basicConfig(format="symbi: %(levelname)s: %(message)s", level=logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    from runtime.delivery import ChannelError, DeliveryWorker, chain_callbacks

    try:  # e.g. a custom channel named like a built-in one: refused before anything starts
        deliveries = DeliveryWorker(store, config, SystemClock())
    except ChannelError as e:
        raise CliError(str(e)) from None
    sched = Scheduler(store, config.scheduler, SystemClock(), owner_id=owner,
                      on_event=chain_callbacks(printer.on_event, deliveries.on_event),
                      standby=standby, app_config=config)
    started = time.monotonic()

    def on_signal(signame: str) -> None:
        if stop.is_set():
            # second signal: interrupt the running runs (recorded `interrupted`, the lease
            # released); a third one takes the default action and the process ends at once
            n = sched.interrupt_running()
            click.echo(f"interrupting {n} running run{'s' * (n != 1)} ({signame})", err=True)
            for s in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(s)
            return
        busy = sched.in_flight
        wait = (f"; waiting up to {_secs(config.scheduler.shutdown_timeout_seconds)} for "
                f"{busy} running run{'s' * (busy != 1)} (Ctrl-C again to interrupt them)"
                if busy else "")
        click.echo(f"stopping ({signame}){wait}", err=True)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    def time_up() -> None:
        if not stop.is_set():
            click.echo(f"stopping (--for {_secs(limit or 0)} elapsed)", err=True)
            stop.set()

    if limit is not None:
        loop.call_later(limit, time_up)
    api_service = None
    try:
        if api:  # before the scheduler runs: its metrics start from the store
            from runtime.api import ApiService, ApiStartError

            api_service = ApiService(store, config, sched,
                                     lambda line: click.echo(line, err=True))
            try:
                await api_service.start()
            except ApiStartError as e:
                raise CliError(str(e)) from None
        # the delivery worker stops after the scheduler, so runs that finish during its
        # shutdown are delivered too
        delivery_stop = asyncio.Event()
        delivery_task = asyncio.create_task(deliveries.run(delivery_stop))
        try:
            code = await sched.run(stop)
        finally:
            delivery_stop.set()
            await delivery_task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        printer.flush_missed()
        if api_service is not None:
            await api_service.close()
    if code == 1 and not standby:
        holder = printer.lease_holder or "another scheduler"
        raise CliError(f"{holder} holds the scheduler lease on {printer.store_path}; not "
                       "starting (--no-standby)")
    st = sched.stats
    parts = [f"{n} {s}" for s, n in sorted(st.by_status.items())]
    if st.missed:
        parts.append(f"{st.missed} missed")
    if st.skipped:
        parts.append(f"{st.skipped} skipped")
    click.echo(f"scheduler stopped after {_secs(round(time.monotonic() - started))}: "
               f"{st.runs_total} run{'s' * (st.runs_total != 1)}"
               + (f" ({', '.join(parts)})" if parts else ""), err=True)
    return code


class RunPrinter:
    """Turns scheduler events into one human line per run (stdout) and notices (stderr).

    Missed occurrences found in one pass are folded into one line per job: after a long
    downtime a job that fires every second would otherwise print thousands of lines."""

    MISSED_REASONS = {
        "missed_superseded": "the scheduler was not running (catch-up runs only the latest)",
        "missed_skip": "the scheduler was not running (catchup: skip)",
        "missed_outside_window": "older than the job's catchup_window",
    }

    def __init__(self, *, quiet: bool, verbose: bool, store_path: Path, name_width: int):
        self.quiet = quiet
        self.verbose = verbose
        self.store_path = store_path
        self.width = min(max(name_width, 8), 32)
        self.color = sys.stdout.isatty()
        enc = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
        self.fancy = enc.startswith("utf")
        self.last_date: str | None = None
        self.was_standby = False
        self.lease_holder: str | None = None
        self._missed: dict[str, list[dict[str, Any]]] = {}
        self._flush_scheduled = False

    # ---- dispatch

    def on_event(self, kind: str, p: dict[str, Any]) -> None:
        """The scheduler's ``on_event`` callback."""
        if kind == "run_missed":
            self._missed.setdefault(p.get("job_name") or "?", []).append(p)
            self._schedule_flush()
            return
        self.flush_missed()
        if kind == "standby":
            self.was_standby = True
            self.lease_holder = p.get("holder")
            exp = p.get("expires_at")
            from runtime.output import when

            gone = (" — that process is no longer running (killed?); the lease runs out"
                    if _holder_is_dead(p.get("holder")) else "")
            click.echo(f"standby: another scheduler ({p.get('holder') or '?'}) holds the lease on "
                       f"{self.store_path} until {when(exp)}{gone}; waiting to take over "
                       "(--no-standby exits instead)", err=True)
        elif kind == "lease_busy":
            self.lease_holder = p.get("holder")
        elif kind == "lease_acquired":
            if p.get("taken_over_from"):
                click.echo(f"took over the scheduler lease from {p['taken_over_from']}: that "
                           "process is no longer running (killed?)", err=True)
                self.was_standby = False
            elif self.was_standby:
                click.echo(f"took over the scheduler lease as {p.get('owner')}", err=True)
                self.was_standby = False
        elif kind == "lease_lost":
            click.echo("lost the scheduler lease to another scheduler; its runs here were "
                       "stopped, waiting as a standby", err=True)
        elif self.quiet:
            return
        elif kind == "run_started":
            if self.verbose:
                self._line(p.get("started_at") or p.get("at"), "▶", "blue", p, "started", "",
                           self._trigger(p))
        elif kind == "run_finished":
            self._finished(p)
        elif kind == "run_skipped":
            self._line(p.get("at"), "·", "yellow", p, "skipped", "",
                       f"occurrence {self._clock(p.get('scheduled_for'))}: "
                       f"{p.get('error') or p.get('reason') or ''}")
        elif kind == "retry_scheduled":
            from runtime.output import relative

            due = p.get("due_at")
            self._line(p.get("at"), "↻", "yellow", p, "retry", "",
                       f"attempt {p.get('attempt')} {relative(due, p.get('at'))} "
                       f"(at {self._clock(due)})")
        elif kind == "dead_letter":
            self._line(p.get("at"), "✗", "red", p, "dead_letter", "",
                       f"after {p.get('failures')} failed attempts; it stops firing until "
                       f"`symbi cron reset {p.get('job_name')}`")

    # ---- lines

    def _finished(self, p: dict[str, Any]) -> None:
        from runtime.output import duration_ms, one_line

        status = p.get("status") or "?"
        if status == "awaiting_approval":  # not a result: the run waits, neutrally
            prefix = str(p.get("id") or "?")[:8]
            self._line(p.get("at"), "⏸", None, p, "awaiting", "",
                       f"{self._trigger(p)} approval — approve with: symbi cron approve "
                       f"{prefix} (or reject)".strip())
            return
        mark, color = {"succeeded": ("✓", "green"), "interrupted": ("!", "yellow"),
                       "cancelled": ("·", "yellow"), "denied": ("✗", "red"),
                       }.get(status, ("✗", "red"))
        detail = p.get("summary") if status == "succeeded" else (p.get("error") or p.get("summary"))
        if status == "interrupted" and p.get("stop_reason") == "crash":
            detail = (f"left {self._was(p)} by scheduler {p.get('owner') or '?'} "
                      "(crash or kill)")
        tags = self._trigger(p)
        late = p.get("lateness_ms")
        if late is not None and late >= 2000 and p.get("trigger") == "schedule":
            tags = (tags + " " if tags else "") + f"started {duration_ms(late)} late;"
        text = one_line(detail, 100)
        self._line(p.get("finished_at") or p.get("at"), mark, color, p, status,
                   duration_ms(p.get("duration_ms")) if p.get("started_at") else "",
                   f"{tags} {text}".strip())

    @staticmethod
    def _was(p: dict[str, Any]) -> str:
        return "running" if p.get("started_at") else "pending"

    def _trigger(self, p: dict[str, Any]) -> str:
        trig = p.get("trigger")
        if trig == "catchup":
            return f"[catch-up of {self._clock(p.get('scheduled_for'))}]"
        if trig == "retry":
            return f"[retry, attempt {p.get('attempt')}]"
        if trig in ("manual", "api"):
            return f"[{trig}]"
        return ""

    def _clock(self, t: Any) -> str:
        from runtime.output import clock_time

        dt = _as_dt(t)
        return clock_time(dt) if dt else "?"

    def _line(self, t: Any, mark: str, color: str | None, p: dict[str, Any], status: str,
              dur: str, detail: str) -> None:
        from runtime.output import clock_time, local_date

        dt = _as_dt(t) or _now()
        day = local_date(dt)
        if day != self.last_date:
            self.last_date = day
            click.echo(f"── {day} ──" if self.fancy else f"-- {day} --")
        if not self.fancy:
            mark = {"✓": "+", "✗": "x", "▶": ">", "↻": "r", "·": ".", "⏸": "="}.get(mark, mark)
        job = p.get("job_name") or "?"
        head = f"{mark} {job:<{self.width}}  {status:<11}"
        if self.color and color:
            head = click.style(head, fg=color)
        tail = f"{dur:>7}  {detail}".rstrip()
        click.echo(f"{clock_time(dt)}  {head}{tail}".rstrip())

    # ---- missed occurrences, folded per job

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_missed()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush_missed)

    def flush_missed(self) -> None:
        """Print the missed occurrences collected so far (one line per job)."""
        self._flush_scheduled = False
        pending, self._missed = self._missed, {}
        if self.quiet:
            return
        for job, events in pending.items():
            events.sort(key=lambda e: str(e.get("scheduled_for")))
            reasons = {e.get("stop_reason") for e in events}
            summary = next((e.get("error") for e in events if e.get("stop_reason") == "missed_summary"), None)
            n = len(events)
            span = self._clock(events[0].get("scheduled_for"))
            if n > 1:
                span += f" … {self._clock(events[-1].get('scheduled_for'))}"
            why = "; ".join(sorted(self.MISSED_REASONS.get(r or "", "") for r in reasons
                                   if r in self.MISSED_REASONS))
            if summary:
                why = (why + "; " if why else "") + summary
            word = "occurrence" if n == 1 else "occurrences"
            self._line(events[-1].get("at"), "·", "yellow", {"job_name": job}, "missed", "",
                       f"{n} {word} {span}: {why}".rstrip(": "))


def _holder_is_dead(holder: Any) -> bool:
    """True if the lease holder is a ``host:pid`` of this host whose process does not exist
    (a scheduler killed with SIGKILL: its lease only runs out)."""
    from runtime.scheduler import lease_holder_is_dead

    return lease_holder_is_dead(holder)


def _as_dt(t: Any) -> datetime | None:
    if isinstance(t, datetime):
        return t
    if isinstance(t, str):
        try:
            return datetime.fromisoformat(t)
        except ValueError:
            return None
    return None


@cli.command("run")
@click.argument("agent")
@click.option("--input", "input_", default="", help="Input text for the agent (- reads stdin).")
@click.option("--file", "files", multiple=True, type=click.Path(),
              help="Look for AGENT in these .symbi files first (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds before the run is stopped (default: the agent's timeout).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--agent-pin-jwt", "agent_pin_jwt", default=None,
              help="AgentPin credential when AgentPin is required (default: $AGENT_PIN_JWT).")
@click.option("--no-policy", is_flag=True,
              help="Skip the policy gate (AgentPin verification when required).")
@pass_ctx
def run_agent_cmd(c: Ctx, agent: str, input_: str, files: tuple[str, ...],
                  timeout: float | None, fmt: str, agent_pin_jwt: str | None,
                  no_policy: bool) -> None:
    """Run AGENT once, outside the scheduler, and print its output.

    AGENT is looked up in --file sources, then the state database, then the standard library
    (echo, system_health). Nothing is recorded in the state database. An agent alone has no
    schedule policy: the gate only verifies its AgentPin credential, and only when AgentPin is
    required ([agentpin] required / SYMBI_AGENTPIN_REQUIRED); --no-policy skips it.
    """
    from compiler.compile import stdlib_agents
    from runtime.executor import ExecRequest, executor_for

    if input_ == "-":
        input_ = sys.stdin.read()
    agent_def = None
    if files:
        _, agents, _ = _load_definitions(files, True)
        agent_def = next((a for a in agents if a.name == agent), None)
    if agent_def is None and c.store_file.is_file():
        agent_def = c.store().get_agent(agent)
    if agent_def is None:
        std = stdlib_agents().get(agent)
        agent_def = std[0] if std else None
    if agent_def is None:
        raise CliError(f"no agent named `{agent}` (looked in "
                       + ("--file sources, " if files else "")
                       + f"the state database {c.store_file} and the standard library)")
    if not no_policy:
        from runtime.cli_policy import check_agent_run
        from runtime.policy import Deny

        decision = asyncio.run(check_agent_run(c.config, agent_def, token=agent_pin_jwt))
        if isinstance(decision, Deny):
            raise CliError(f"agent `{agent_def.name}` denied by policy: {decision.reason}")
    req = ExecRequest(agent=agent_def, input=input_, timeout_seconds=timeout)
    # the configuration gives `llm` agents their [providers.*] (a local server, a key …)
    result = asyncio.run(executor_for(agent_def, c.config).execute(req))
    if fmt == "json":
        from runtime.output import to_json

        click.echo(to_json({"agent": agent_def.name, "status": result.status,
                            "output": result.output, "summary": result.summary,
                            "error": result.error, "exit_code": result.exit_code,
                            "usage": result.usage}))
    elif result.output:
        click.echo(result.output, nl=not result.output.endswith("\n"))
    if result.status != "succeeded":
        if fmt == "json":
            sys.exit(EXIT_ERROR)
        raise CliError(f"agent `{agent_def.name}` {result.status.replace('_', ' ')}"
                       + (f": {result.error}" if result.error else ""))


# ------------------------------------------------------------------ cron


@cli.group()
def cron() -> None:
    """Manage scheduled jobs (list, add, pause, run, history …)."""


JOB_COLUMNS = [("id", "ID"), ("name", "NAME"), ("agent", "AGENT"), ("schedule", "SCHEDULE"),
               ("status", "STATUS"), ("next_run", "NEXT RUN"), ("last_run", "LAST RUN"),
               ("runs", "RUNS"), ("failures", "FAILS")]


def _job_table_row(j: JobRow, now: datetime) -> dict[str, Any]:
    from runtime.output import when, when_next

    return {
        "id": j.id, "name": j.name, "agent": j.definition.agent,
        "schedule": _schedule_text(j.definition), "status": j.status,
        "next_run": when_next(j.next_run, now) if j.status == "active" else "-",
        "last_run": when(j.last_run, now), "runs": j.run_count, "failures": j.failure_count,
    }


def _job_record(j: JobRow) -> dict[str, Any]:
    """CSV row of a job: flat, raw values."""
    d = j.to_dict()
    d.pop("definition", None)
    return d


@cron.command("list")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs with this status.")
@click.option("--agent", help="Only jobs running this agent.")
@format_option
@pass_ctx
def cron_list(c: Ctx, status: str | None, agent: str | None, fmt: str) -> None:
    """List jobs with their schedule, status, next and last run."""
    from runtime.output import emit, to_json

    jobs = c.store().list_jobs(status=status, agent=agent)
    if fmt == "json":
        click.echo(to_json([j.to_dict() for j in jobs]))
        return
    now = _now()
    emit([_job_table_row(j, now) for j in jobs], JOB_COLUMNS, fmt,
         records=[_job_record(j) for j in jobs] if fmt == "csv" else None,
         empty="No scheduled jobs." if not (status or agent) else "No jobs match.")
    if fmt == "table" and jobs and not (status or agent):
        dead = sum(1 for j in jobs if j.status == "dead_letter")
        if dead:
            click.echo(f"\n{dead} job{'s' * (dead != 1)} in dead_letter: `symbi cron reset JOB` "
                       "after fixing the cause", err=True)


@cron.command("add")
@click.option("--file", "file_", type=click.Path(), metavar="F.symbi",
              help="A .symbi file holding the schedule.")
@click.option("--schedule", "schedule_name", metavar="NAME", help="The schedule in --file to add.")
@click.option("--json", "json_text", metavar="JSON", help="Inline job definition (- reads stdin).")
@pass_ctx
def cron_add(c: Ctx, file_: str | None, schedule_name: str | None, json_text: str | None) -> None:
    """Add a job from a .symbi file or from inline JSON.

    \b
    Examples:
      symbi cron add --file agents.symbi --schedule daily-report
      symbi cron add --json '{"name": "quick-task", "agent_id": "echo", "cron_expr": "0 * * * *"}'

    JSON accepts the .symbi property names and the seed/SDK names (agent_id, agent_name,
    cron_expr, cron_expression). The agents a --file schedule uses are added with it.
    """
    from compiler.compile import stdlib_agents
    from runtime.output import when_next

    if bool(file_) == bool(json_text):
        raise CliError("give either --file F.symbi --schedule NAME, or --json '{…}'", EXIT_USAGE)
    _ = c.config
    agents: list[AgentDef] = []
    if file_:
        if not schedule_name:
            raise CliError("--file needs --schedule NAME (the schedule to add)", EXIT_USAGE)
        jobs, all_agents, _ = _load_definitions((file_,), True)
        job = next((j for j in jobs if j.name == schedule_name), None)
        if job is None:
            from compiler.diagnostics import did_you_mean

            names = sorted(j.name for j in jobs)
            hint = did_you_mean(schedule_name, names)
            raise CliError(f"{file_}: no schedule named `{schedule_name}`"
                           + (f" (did you mean `{hint}`?)" if hint else
                              f" (schedules in the file: {', '.join(names) or 'none'})"))
        agents = [a for a in all_agents if a.name == job.agent]
    else:
        assert json_text is not None
        if schedule_name:
            raise CliError("--schedule goes with --file, not --json", EXIT_USAGE)
        job = _job_from_json_text(json_text)
        std = stdlib_agents().get(job.agent)
        if std is not None:
            agents = [std[0]]  # runs need the definition in the store
    store = c.store(create=True)
    row = _store_call(store.add_job, job, origin="cli", actor=_actor(), agents=agents)
    click.echo(f"created job {row.name} ({row.id}), {row.status}")
    if row.next_run and row.status == "active":
        click.echo(f"  next run: {when_next(row.next_run)}")
    if store.get_agent(job.agent) is None:
        click.echo(f"warning: agent `{job.agent}` is not defined; its runs fail until a bundle "
                   "defining it is deployed", err=True)


def _job_from_json_text(json_text: str) -> JobDef:
    from runtime.jobspec import JobSpecError, job_from_json

    if json_text == "-":
        json_text = sys.stdin.read()
    try:
        data = json.loads(json_text)
    except json.JSONDecodeError as e:
        raise CliError(f"--json: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                       EXIT_USAGE) from None
    try:
        return job_from_json(data)
    except JobSpecError as e:
        raise CliError("--json: invalid job definition:\n  " + "\n  ".join(e.problems),
                       EXIT_USAGE) from None


@cron.command("remove")
@click.argument("job", required=False)
@click.option("--name", help="Remove the job with this name.")
@click.option("--force", "-f", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def cron_remove(c: Ctx, job: str | None, name: str | None, force: bool) -> None:
    """Remove a job (JOB is an id or name; or --name). Its run history is deleted with it; the
    audit log keeps its events. Asks for confirmation on a terminal unless --force."""
    if bool(job) == bool(name):
        raise CliError("give the job as JOB (id or name) or as --name NAME", EXIT_USAGE)
    ref = job or name
    assert ref is not None
    store = c.store()
    if name:
        row = next((j for j in store.list_jobs() if j.name == name), None)
        if row is None:
            raise CliError(f"no job named `{name}` (see `symbi cron list`)")
    else:
        row = _job(c, ref)
    if not force and sys.stdin.isatty():
        runs = len(store.list_runs(row.id, limit=1_000_000))
        if not click.confirm(f"remove job {row.name} ({row.id}) and its {runs} "
                             f"run{'s' * (runs != 1)} of history?", default=False):
            raise CliError("not removed")
    _store_call(store.remove_job, row.id, actor=_actor())
    click.echo(f"removed job {row.name} ({row.id})")


@cron.command("pause")
@click.argument("job")
@pass_ctx
def cron_pause(c: Ctx, job: str) -> None:
    """Pause a job: it stops firing but keeps its state (`resume` restarts it)."""
    old = _job(c, job)
    row = _store_call(c.store().pause_job, old.id, actor=_actor())
    if old.status == row.status:
        click.echo(f"job {row.name} ({row.id}) is already paused")
    else:
        click.echo(f"paused job {row.name} ({row.id})")


@cron.command("resume")
@click.argument("job")
@pass_ctx
def cron_resume(c: Ctx, job: str) -> None:
    """Resume a paused job; its next run is computed from now (runs missed while paused are
    not replayed)."""
    from runtime.output import when_next

    old = _job(c, job)
    row = _store_call(c.store().resume_job, old.id, actor=_actor())
    already = "is already active" if old.status == row.status else "resumed"
    click.echo(f"job {row.name} ({row.id}) {already}; next run {when_next(row.next_run)}")


@cron.command("reset")
@click.argument("job")
@pass_ctx
def cron_reset(c: Ctx, job: str) -> None:
    """Reset a job after failures: dead_letter → active, failure counts 0."""
    from runtime.output import when_next

    old = _job(c, job)
    row = _store_call(c.store().reset_job, old.id, actor=_actor())
    change = f"{old.status} → {row.status}" if old.status != row.status else f"still {row.status}"
    nxt = f"; next run {when_next(row.next_run)}" if row.status == "active" else ""
    click.echo(f"reset job {row.name} ({row.id}): {change}, failure count 0{nxt}")


RUN_COLUMNS = [("id", "RUN ID"), ("scheduled", "SCHEDULED"), ("started", "STARTED"),
               ("trigger", "TRIGGER"), ("attempt", "TRY"), ("status", "STATUS"),
               ("duration", "DURATION"), ("detail", "OUTPUT / ERROR")]


def _run_detail(r: RunRow, width: int) -> str:
    from runtime.cli_policy import run_detail  # a heartbeat's max_iterations warning shows

    return run_detail(r, width)


def _run_row(r: RunRow) -> dict[str, Any]:
    from runtime.output import duration_ms, local_time

    return {
        "id": r.id[:8], "job": r.job_name, "scheduled": local_time(r.scheduled_for),
        "started": local_time(r.started_at), "trigger": r.trigger, "attempt": r.attempt,
        "status": r.status, "duration": duration_ms(r.duration_ms),
        "detail": _run_detail(r, 70),
    }


def _status_lines(c: Ctx, ref: str, history: int) -> list[str]:
    from runtime.output import duration_ms, local_time, relative, when, when_next

    row = _job(c, ref)
    d = row.definition
    now = _now()
    pairs: list[tuple[str, str]] = [("Job", f"{row.name} ({row.id})")]
    if d.description:
        pairs.append(("Description", d.description))
    pairs += [("Agent", d.agent), ("Schedule", f"{d.cron}  [{d.timezone}]" if d.cron
                                    else _schedule_text(d)),
              ("Meaning", _meaning(d)), ("Status", row.status), ("Origin", row.origin + (
                  f" ({d.source})" if d.source else "")),
              ("Runs", f"{row.run_count} ({row.failure_count} failed, "
                       f"{row.consecutive_failures} in a row)"),
              ("Last run", when(row.last_run, now)),
              ("Next run", when_next(row.next_run, now) if row.status == "active"
               else f"- ({row.status})")]
    upcoming = row.upcoming(5)[1:]
    if upcoming:
        pairs.append(("Then", ", ".join(f"{local_time(t)} ({relative(t, now)})"
                                        for t in upcoming[:2])
                      + (f", … {len(upcoming) - 2} more" if len(upcoming) > 2 else "")))
    retries = d.max_retries if d.max_retries is not None else "default"
    pairs.append(("Policy", f"catchup {d.catchup} (window {_secs(d.catchup_window_seconds)}), "
                            f"max_concurrent {d.max_concurrent}, max_retries {retries}, "
                            f"backoff {_secs(d.retry_backoff_seconds)}"))
    if d.delivery:
        pairs.append(("Delivery", ", ".join(d.delivery)))
    width = max(len(k) for k, _ in pairs) + 2
    lines = [f"{k + ':':<{width}}{v}" for k, v in pairs]
    if history:
        runs = c.store().list_runs(row.id, limit=history)
        lines.append("")
        if not runs:
            lines.append("No runs yet.")
        else:
            from runtime.output import render_table

            lines.append(f"Last {len(runs)} run{'s' * (len(runs) != 1)}:")
            table = [[local_time(r.scheduled_for), r.status, r.trigger, str(r.attempt),
                      duration_ms(r.duration_ms), _run_detail(r, 70) or "-"]
                     for r in runs]
            heads = ["SCHEDULED", "STATUS", "TRIGGER", "TRY", "DURATION", "OUTPUT / ERROR"]
            cells = _delivery_cells(c, runs)
            if cells is not None:
                heads.append("DELIVERIES")
                for line, cell in zip(table, cells, strict=True):
                    line.append(cell)
            lines += render_table(table, heads, indent=2).rstrip("\n").split("\n")
            if d.heartbeat is not None and d.heartbeat.enabled:
                from runtime.cli_policy import heartbeat_lines

                hb = heartbeat_lines(c.store(), runs[0])
                lines += ["", *hb] if hb else []
    return lines


@cron.command("status")
@click.argument("job")
@click.option("--history", "history", type=click.IntRange(min=0), default=0,
              help="Include the last N runs.")
@click.option("--watch", is_flag=True, help=f"Refresh every {WATCH_SECONDS:g} seconds until Ctrl-C.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_ctx
def cron_status(c: Ctx, job: str, history: int, watch: bool, fmt: str) -> None:
    """Show a job: schedule, status, upcoming fire times and (with --history N) recent runs."""
    if fmt == "json":
        if watch:
            raise CliError("--watch works with --format text only", EXIT_USAGE)
        from runtime.output import to_json

        row = _job(c, job)
        data = row.to_dict()
        data["next_runs"] = [t.isoformat() for t in row.upcoming(5)]
        runs = c.store().list_runs(row.id, limit=history) if history else []
        data["history"] = _with_deliveries(c, runs)
        from runtime.heartbeat import list_iterations

        for rec, r in zip(data["history"], runs, strict=True):  # [] for other runs
            rec["heartbeat_iterations"] = [it.to_dict() for it in list_iterations(c.store(), r.id)]
        click.echo(to_json(data))
        return
    if not watch:
        click.echo("\n".join(_status_lines(c, job, history)))
        return
    _job(c, job)  # an unknown job is an error before the screen is cleared
    try:
        while True:
            lines = _status_lines(c, job, history or 10)
            click.clear()
            click.echo("\n".join(lines))
            click.echo(f"\nrefreshing every {WATCH_SECONDS:g}s (Ctrl-C to stop) · "
                       f"{datetime.now().astimezone():%H:%M:%S}")
            time.sleep(WATCH_SECONDS)
    except KeyboardInterrupt:
        click.echo("")


@cron.command("run")
@click.argument("job")
@click.option("--input", "input_", default=None,
              help="Input for this run (default: the job's input; - reads stdin).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the run to finish and print its output.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=300,
              show_default=True, help="Seconds to wait with --wait.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_ctx
def cron_run(c: Ctx, job: str, input_: str | None, wait: bool, timeout: float, fmt: str) -> None:
    """Run a job now, outside its schedule (a `manual` run).

    If a scheduler holds the state database it runs the job within a tick; otherwise the run
    happens in this process. Exit status 1 if the run does not succeed.
    """
    from runtime.scheduler import run_manual_now

    if input_ == "-":
        input_ = sys.stdin.read()
    row = _job(c, job)
    store = c.store()
    run = _store_call(store.request_manual_run, row.id, input=input_, trigger="manual",
                      actor=_actor())
    if not wait:
        if fmt == "json":
            from runtime.output import to_json

            click.echo(to_json(run.to_dict(with_usage=True)))
        else:
            click.echo(f"run {run.id} of {row.name} requested")
        return
    click.echo(f"run {run.id} of {row.name} requested", err=True)
    final = asyncio.run(run_manual_now(store, c.config.scheduler, run.id, timeout=timeout,
                                       app_config=c.config))
    if final is None:
        raise CliError(f"run {run.id} did not finish within {timeout:g}s; see "
                       f"`symbi cron history {row.name}`")
    if fmt == "json":
        from runtime.output import to_json

        click.echo(to_json(final.to_dict(with_usage=True)))
    elif final.output:
        click.echo(final.output, nl=not final.output.endswith("\n"))
    if final.owner == f"cli:{os.getpid()}":  # it ran here, where no delivery worker runs
        _deliver_here(c, final)
    if final.status != "succeeded":
        if fmt == "json":
            sys.exit(EXIT_ERROR)
        if final.status == "awaiting_approval":
            raise CliError(f"run {final.id} is waiting for an approval; it runs once approved "
                           f"(see `symbi cron history {row.name}`)")
        raise CliError(f"run {final.id} {final.status.replace('_', ' ')}"
                       + (f": {final.error}" if final.error else ""))
    from runtime.output import duration_ms

    click.echo(f"run {final.id} succeeded in {duration_ms(final.duration_ms)}", err=True)


def _deliver_here(c: Ctx, run: RunRow) -> None:
    """Deliver a run that ``cron run`` executed in this process. The ``stdout`` channel writes
    to stderr here (stdout is the run's output); retries stay in the outbox for the next
    ``symbi up``."""
    from runtime.delivery import (
        ChannelContext,
        ChannelError,
        ChannelRegistry,
        deliver_run_now,
    )

    try:
        registry = ChannelRegistry.discover(
            ChannelContext.from_config(c.config, stdout=sys.stderr))
        receipts = asyncio.run(deliver_run_now(c.store(), c.config, run.id, registry=registry))
    except ChannelError as e:
        click.echo(f"symbi: warning: output not delivered: {e}", err=True)
        return
    for r in receipts:
        if r.status != "delivered":
            later = " (the next `symbi up` retries it)" if r.status == "retrying" else ""
            click.echo(f"delivery to {r.channel} {r.status}: {r.last_error}{later}", err=True)


@cron.command("history")
@click.argument("job", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many runs.")
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@format_option
@pass_ctx
def cron_history(c: Ctx, job: str | None, limit: int, status: str | None, fmt: str) -> None:
    """Run history of JOB, newest first (of all jobs when JOB is omitted)."""
    from runtime.output import emit

    store = c.store()
    ref = _job(c, job).id if job else None
    runs = store.list_runs(ref, limit=limit, status=status)
    cols = ([("job", "JOB")] if not job else []) + RUN_COLUMNS
    rows = [_run_row(r) for r in runs]
    cells = _delivery_cells(c, runs) if fmt == "table" else None
    if cells is not None:
        cols = cols + [("deliveries", "DELIVERIES")]
        for row, cell in zip(rows, cells, strict=True):
            row["deliveries"] = cell
    emit(rows, cols, fmt, records=_with_deliveries(c, runs) if fmt != "table" else None,
         csv_exclude=("output", "deliveries"), empty="No runs.")


def _with_deliveries(c: Ctx, runs: list[RunRow]) -> list[dict[str, Any]]:
    """Run records (``--format json``) with their token ``usage`` and their delivery receipts
    under ``deliveries``."""
    from runtime.delivery import receipts_for_runs

    receipts = receipts_for_runs(c.store(), [r.id for r in runs])
    return [{**r.to_dict(with_usage=True), "deliveries": [d.to_dict() for d in receipts[r.id]]}
            for r in runs]


def _delivery_cells(c: Ctx, runs: list[RunRow]) -> list[str] | None:
    """The DELIVERIES cell of each run (``webhook ok, email failed``); None when none of the
    runs has a delivery (the column is left out)."""
    from runtime.delivery import format_receipts, receipts_for_runs

    receipts = receipts_for_runs(c.store(), [r.id for r in runs])
    if not any(receipts.values()):
        return None
    return [format_receipts(receipts[r.id]) for r in runs]


# ------------------------------------------------------------------ audit


@cli.group()
def audit() -> None:
    """Query and verify the tamper-evident audit log."""


def _parse_when(text: str | None, opt: str) -> datetime | None:
    """``2026-02-01``, ``2026-02-01T09:00:00Z`` (a time without offset is local), or a
    duration meaning "that long ago" (``1h``, ``7d``)."""
    if text is None:
        return None
    from compiler.durations import parse_duration

    ago = parse_duration(text) if text[:1].isdigit() and not text[:4].isdigit() else None
    if ago is not None:
        return _now() - timedelta(seconds=ago)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CliError(f"{opt}: expected a date, an ISO-8601 time or a duration ago, such as "
                       f"2026-02-01, 2026-02-01T09:00:00Z or 2h; got {text!r}", EXIT_USAGE) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # a naive value is local time
    return dt.astimezone(UTC)


def _details_text(details: dict[str, Any]) -> str:
    from runtime.output import one_line

    parts = []
    for k in sorted(details):
        v = details[k]
        if v is None or v == [] or v == {}:
            continue
        parts.append(f"{k}={v if isinstance(v, (str, int, float)) else json.dumps(v)}")
    return one_line(" ".join(parts), 90)


@audit.command("query")
@click.option("--type", "type_", metavar="TYPE", help="Event type, e.g. CronJobFailed.")
@click.option("--since", metavar="WHEN", help="Events at or after WHEN (date, time or e.g. 2h).")
@click.option("--until", metavar="WHEN", help="Events before WHEN.")
@click.option("--job", metavar="JOB", help="Events of this job (id or name).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many events (the newest).")
@format_option
@pass_ctx
def audit_query(c: Ctx, type_: str | None, since: str | None, until: str | None,
                job: str | None, limit: int, fmt: str) -> None:
    """List audit events, newest first."""
    from runtime.audit import EVENT_TYPES
    from runtime.output import emit, local_time

    if type_ and type_ not in EVENT_TYPES:
        from compiler.diagnostics import did_you_mean

        hint = did_you_mean(type_, sorted(EVENT_TYPES))
        raise CliError(f"--type: unknown event type {type_!r}"
                       + (f" (did you mean {hint}?)" if hint else
                          f"; the types are {', '.join(sorted(EVENT_TYPES))}"), EXIT_USAGE)
    lo, hi = _parse_when(since, "--since"), _parse_when(until, "--until")
    store = c.store()
    job_ref = None
    if job:
        row = store.get_job(job)
        job_ref = row.id if row else job  # a removed job is still found by name
    events = store.audit_query(type=type_, since=lo, until=hi, job=job_ref, limit=limit)
    rows = [{"id": e.id, "time": local_time(e.time), "type": e.type,
             "job": e.job_name or e.job_id, "actor": e.actor,
             "details": _details_text(e.details)} for e in events]
    emit(rows, [("id", "ID"), ("time", "TIME"), ("type", "TYPE"), ("job", "JOB"),
                ("actor", "ACTOR"), ("details", "DETAILS")], fmt,
         records=[e.to_dict() for e in events] if fmt != "table" else None,
         empty="No audit events.")


@audit.command("verify")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_ctx
def audit_verify(c: Ctx, fmt: str) -> None:
    """Check the audit hash chain; exit 1 if an event was altered, removed or reordered."""
    res = c.store().audit_verify()
    if fmt == "json":
        from runtime.output import to_json

        click.echo(to_json(res.to_dict()))
        if not res.ok:
            sys.exit(EXIT_ERROR)
        return
    if res.ok:
        click.echo(f"audit chain ok: {res.count} event{'s' * (res.count != 1)} verified")
    else:
        raise CliError(f"audit chain BROKEN at event {res.first_bad_id}: {res.reason} "
                       f"({res.count} event(s) checked)")


@cli.command("serve")
@click.option("--host", metavar="HOST",
              help="Address to bind (default: [api] host). Anything but loopback needs a key.")
@click.option("--port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Port (default: [api] port, 8080; 0 picks a free one).")
@pass_ctx
def serve(c: Ctx, host: str | None, port: int | None) -> None:
    """Serve the HTTP API only, without running the scheduler.

    Jobs and runs are managed in the state database; a `symbi up` on the same database runs
    them (triggered runs are picked up within a tick). Stops on Ctrl-C / SIGTERM.
    """
    from runtime.api import serve_command

    serve_command(c, host, port)


from runtime.cli_policy import register as _register_approvals  # noqa: E402

_register_approvals(cron)  # `symbi cron approve` / `reject` (they use the helpers above)


def main() -> NoReturn:
    """Console entry point: no traceback ever reaches the user."""
    try:
        rv = cli.main(standalone_mode=False, prog_name="symbi")
        if isinstance(rv, int):
            sys.exit(rv)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `symbi cron history | head`: stop quietly (and keep Python from complaining at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except SystemExit:
        raise
    except Exception as e:  # an internal error must not dump a traceback on the user
        click.echo(f"internal error: {type(e).__name__}: {e} (please report this; run with "
                   "SYMBI_DEBUG=1 for details)", err=True)
        if os.environ.get("SYMBI_DEBUG"):
            raise
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
