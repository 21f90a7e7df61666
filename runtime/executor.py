"""Executors: how one run of an agent is carried out (SPEC §5.4).

``executor_for(agent)`` picks the implementation from ``AgentDef.executor``:

- ``command``: a subprocess in its own process group (``/bin/sh -c`` for a string, argv for a
  list). Input on stdin and in ``SYMBI_INPUT``; output = stdout; a non-zero exit fails the run
  with the stderr tail. A timeout or a cancellation ends the whole process group (SIGTERM, a
  short grace, then SIGKILL), and processes left in the group when the main one exits are
  ended with the run, so no run leaks processes.
- ``python``: ``"package.module:function"``, sync or async, called as ``fn(input, context)`` or
  ``fn(input)``. Sync functions run in a worker thread unless marked ``symbi_inline = True``
  (cheap, non-blocking functions: saves the thread hand-off, see ``bench`` figures).
- ``llm``: a chat completion from an OpenAI-compatible or Anthropic provider chosen by the
  ``[providers.*]`` config and the model name (``runtime.llm``; ``executor_for(agent, config)``).
- ``http``: one HTTP request to the agent's ``url`` (``method``, ``headers`` with ``${VAR}``
  expanded at run time); the input travels as JSON ``{"input", "job", "run_id"}`` (POST, PUT,
  PATCH) or as the ``input`` query parameter; output = the response body, or its ``output`` /
  ``summary`` fields when it is a JSON object; a non-2xx status fails the run.

Executors never raise for a failing run: every problem is an ``ExecResult`` with status
``failed`` or ``timed_out``. The one exception is ``asyncio.CancelledError``, which is re-raised
after the run's processes are ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import json
import os
import queue
import signal
import subprocess
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import aiohttp

from compiler.ir import AgentDef
from runtime.envexpand import MissingEnvVar, expand, refs, unescape

if TYPE_CHECKING:
    from runtime.config import Config

OUTPUT_CAP_BYTES = 1 << 20  # stored output of a command run (stdout beyond it is drained, dropped)
OUTPUT_CAP_CHARS = 1 << 20  # stored output of a python run
STDERR_TAIL_BYTES = 2048  # how much stderr a failed command's error carries
SUMMARY_CHARS = 500  # derived summary length (SPEC §5.4)
# Linux refuses any single environment string over 128 KiB (MAX_ARG_STRLEN), so a big input is
# cut in SYMBI_INPUT (stdin always carries all of it).
ENV_INPUT_CAP_BYTES = 64 * 1024
SYNC_WORKERS_MAX = min(32, (os.cpu_count() or 1) + 4)  # as asyncio.to_thread's default pool
SYNC_WORKER_IDLE_SECONDS = 10.0  # an idle worker thread ends after this (respawned on demand)
HTTP_DEFAULT_TIMEOUT_SECONDS = 300.0  # an http run with no timeout of its own still ends
HTTP_ERROR_BODY_CHARS = 500  # how much of a non-2xx body the error carries
HTTP_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the others send the input as ?input=

STATUS_SUCCEEDED = "succeeded"
STATUS_FAILED = "failed"
STATUS_TIMED_OUT = "timed_out"


@dataclass
class AgentContext:
    """What a run knows beyond its input; minimal for now (sessions come in a later issue)."""

    messages: list[dict[str, str]] = field(default_factory=list)
    memory: dict[str, str] = field(default_factory=dict)
    summary_in: str | None = None  # previous run's summary (ephemeral_with_summary)


@dataclass(frozen=True)
class ExecRequest:
    """One run of one agent."""

    agent: AgentDef
    input: str
    job_name: str | None = None
    run_id: str | None = None
    # agent.timeout / policy max_runtime; None = no limit. The agent's own ``timeout_seconds``
    # applies as well: the smaller of the two wins.
    timeout_seconds: float | None = None
    context: AgentContext | None = None
    env: Mapping[str, str] | None = None  # for ${VAR} expansion and the child; default os.environ


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one run."""

    status: str  # 'succeeded' | 'failed' | 'timed_out'
    output: str = ""
    summary: str | None = None  # agent's own summary, else None (see derive_summary)
    error: str | None = None  # e.g. "exit status 2: <stderr tail>"
    exit_code: int | None = None
    # llm runs: {"provider", "model", "prompt_tokens", "completion_tokens", "total_tokens",
    # "finish_reason", "attempts"} (token counts None when the provider reports none)
    usage: dict[str, Any] | None = None


class Executor(Protocol):
    """Runs an agent. Must honour cancellation: end the run's processes, re-raise."""

    async def execute(self, req: ExecRequest) -> ExecResult: ...


def _failed(error: str, output: str = "", exit_code: int | None = None) -> ExecResult:
    return ExecResult(status=STATUS_FAILED, output=output, error=error, exit_code=exit_code)


def _effective_timeout(req: ExecRequest) -> float | None:
    limits = [t for t in (req.timeout_seconds, req.agent.timeout_seconds) if t is not None]
    return min(limits) if limits else None


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


# --------------------------------------------------------------------------------- command


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pgid now names someone else's group: not ours to signal
        return False
    return True


class _CommandProtocol(asyncio.SubprocessProtocol):
    """Collects stdout (first ``cap`` bytes) and stderr (last bytes) without ever blocking the
    child, and reports the main process's exit separately from its pipes closing (a process
    left in the background can hold the pipes open after the main one exits)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cap: int) -> None:
        self.cap = cap
        self.out = bytearray()
        self.out_total = 0
        self.err = bytearray()
        self.err_total = 0
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd == 1:
            self.out_total += len(data)
            room = self.cap - len(self.out)
            if room > 0:
                self.out += data[:room]
        elif fd == 2:
            self.err_total += len(data)
            self.err += data
            if len(self.err) > 2 * STDERR_TAIL_BYTES:
                del self.err[:-STDERR_TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.pipes_closed.done():
            self.pipes_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def output_text(self) -> str:
        text = self.out.decode("utf-8", errors="replace")
        if self.out_total > len(self.out):
            text += (
                f"\n[symbi: output truncated: kept the first {len(self.out)} of "
                f"{self.out_total} bytes]"
            )
        return text

    def stderr_tail(self) -> str:
        tail = bytes(self.err[-STDERR_TAIL_BYTES:]).decode("utf-8", errors="replace").strip()
        if tail and self.err_total > STDERR_TAIL_BYTES:
            tail = "…" + tail
        return tail


def _exit_error(returncode: int | None, stderr_tail: str) -> str:
    if returncode is None:
        head = "exit status unknown"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        head = f"killed by {name}"
    else:
        head = f"exit status {returncode}"
    return f"{head}: {stderr_tail}" if stderr_tail else head


class CommandExecutor:
    """Runs ``AgentDef.command`` as a subprocess in a new session (its own process group).

    ``${NAME}`` references: agent ``env`` values, argv items and ``working_dir`` are expanded
    textually from the run environment; in a ``/bin/sh -c`` string they are left for the shell
    to expand from the child environment (which holds them — a value is never spliced into
    shell code), after checking that each one is set. ``$${`` gives a literal ``${``.
    """

    def __init__(
        self,
        *,
        kill_grace_seconds: float = 1.0,
        linger_seconds: float = 0.25,
        output_cap_bytes: int = OUTPUT_CAP_BYTES,
    ) -> None:
        self.kill_grace_seconds = kill_grace_seconds  # SIGTERM → SIGKILL
        self.linger_seconds = linger_seconds  # after the main process exits, for pipes to drain
        self.output_cap_bytes = output_cap_bytes

    def _prepare(self, req: ExecRequest) -> tuple[list[str], dict[str, str], str | None] | str:
        """argv, child environment and cwd — or an error message."""
        agent = req.agent
        command = agent.command
        if not command:
            return f"agent `{agent.name}` uses executor `command` but has no `command`"
        base = os.environ if req.env is None else req.env
        env = dict(base)
        where = "env"
        try:
            for key, value in agent.env:
                where = f"env `{key}`"
                env[key] = expand(value, base)
            env["SYMBI_INPUT"] = _env_input(req.input, env)
            env["SYMBI_AGENT_NAME"] = agent.name
            for key, ident in (("SYMBI_JOB_NAME", req.job_name), ("SYMBI_RUN_ID", req.run_id)):
                if ident is None:
                    env.pop(key, None)  # never leak an outer run's identity
                else:
                    env[key] = ident
            where = "command"
            if isinstance(command, str):
                missing = [name for name in refs(command) if name not in env]
                if missing:
                    raise MissingEnvVar(missing[0])
                argv = ["/bin/sh", "-c", unescape(command)]
            else:
                argv = [expand(part, env) for part in command]
            where = "working_dir"
            cwd = expand(agent.working_dir, env) if agent.working_dir else None
        except MissingEnvVar as exc:
            return f"{exc} (needed by agent `{agent.name}` {where})"
        return argv, env, cwd

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Run the command; see the class docstring."""
        prepared = self._prepare(req)
        if isinstance(prepared, str):
            return _failed(prepared)
        argv, env, cwd = prepared
        if cwd is not None and not os.path.isdir(cwd):
            return _failed(f"working_dir `{cwd}` of agent `{req.agent.name}` is not a directory")

        loop = asyncio.get_running_loop()
        proto = _CommandProtocol(loop, self.output_cap_bytes)
        # The child runs as soon as it is forked, while asyncio still connects its pipes; a
        # cancellation landing in that window would make asyncio kill only the leader and then
        # wait for pipes held by its children. So the spawn is shielded and, if cancelled,
        # completed and ended like any cancelled run.
        spawn = loop.create_task(
            loop.subprocess_exec(
                lambda: proto,
                *argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own process group: a timeout can end all of it
            )
        )
        try:
            transport, _ = await asyncio.shield(spawn)
        except asyncio.CancelledError:
            await self._abort_spawn(spawn, proto)
            raise
        except FileNotFoundError:
            return _failed(f"cannot run `{argv[0]}`: program not found")
        except PermissionError:
            return _failed(f"cannot run `{argv[0]}`: permission denied")
        except OSError as exc:
            return _failed(f"cannot run `{argv[0]}`: {exc.strerror or exc}")

        pgid = transport.get_pid()  # == pid, since start_new_session makes it the group leader
        timeout = _effective_timeout(req)
        timed_out = False
        try:
            stdin = cast("asyncio.WriteTransport | None", transport.get_pipe_transport(0))
            if stdin is not None:
                if req.input:
                    stdin.write(req.input.encode("utf-8"))
                stdin.close()  # flushes, then EOF; a child that never reads just gets EPIPE
            if not proto.exited.done():
                done, _ = await asyncio.wait([proto.exited], timeout=timeout)
                timed_out = not done
            if timed_out:
                await self._end_group(pgid, proto)
            else:
                if not proto.pipes_closed.done():
                    await asyncio.wait([proto.pipes_closed], timeout=self.linger_seconds)
                # Anything still in the group was started by the run; it ends with the run.
                if _signal_group(pgid, 0):
                    await self._end_group(pgid, proto)
            if not proto.pipes_closed.done():
                # held by a process that left the group (setsid): stop waiting for it
                await asyncio.wait([proto.pipes_closed], timeout=0.05)
        except asyncio.CancelledError:
            with contextlib.suppress(asyncio.CancelledError):
                await self._end_group(pgid, proto)
            raise
        finally:
            transport.close()

        returncode = transport.get_returncode()
        output = proto.output_text()
        if timed_out:
            return ExecResult(
                status=STATUS_TIMED_OUT,
                output=output,
                error=f"timed out after {_fmt_seconds(timeout or 0.0)}",
                exit_code=returncode,
            )
        if returncode == 0:
            return ExecResult(status=STATUS_SUCCEEDED, output=output, exit_code=0)
        return _failed(_exit_error(returncode, proto.stderr_tail()), output, returncode)

    async def _abort_spawn(
        self,
        spawn: asyncio.Task[tuple[asyncio.SubprocessTransport, asyncio.BaseProtocol]],
        proto: _CommandProtocol,
    ) -> None:
        """Cancelled while spawning: let the spawn finish, then end the process group."""
        try:
            transport, _ = await asyncio.shield(spawn)
        except asyncio.CancelledError:  # cancelled again: no more waiting, kill when spawned
            spawn.add_done_callback(_kill_spawned)
            return
        except Exception:  # it never started
            return
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._end_group(transport.get_pid(), proto)
        finally:
            transport.close()

    async def _end_group(self, pgid: int, proto: _CommandProtocol) -> None:
        """SIGTERM the group, give it ``kill_grace_seconds`` to exit and close its pipes, then
        SIGKILL whatever is left (also when cancelled while waiting)."""
        try:
            if _signal_group(pgid, signal.SIGTERM):
                pending = [f for f in (proto.exited, proto.pipes_closed) if not f.done()]
                if pending:
                    await asyncio.wait(pending, timeout=self.kill_grace_seconds)
        finally:
            _signal_group(pgid, signal.SIGKILL)
        if not proto.exited.done():
            await asyncio.wait([proto.exited], timeout=self.kill_grace_seconds)


def _kill_spawned(
    spawn: asyncio.Task[tuple[asyncio.SubprocessTransport, asyncio.BaseProtocol]],
) -> None:
    if spawn.cancelled() or spawn.exception() is not None:
        return
    transport, _ = spawn.result()
    _signal_group(transport.get_pid(), signal.SIGKILL)
    transport.close()


def _env_input(text: str, env: dict[str, str]) -> str:
    data = text.encode("utf-8")
    if len(data) <= ENV_INPUT_CAP_BYTES:
        env.pop("SYMBI_INPUT_TRUNCATED", None)
        return text
    env["SYMBI_INPUT_TRUNCATED"] = "1"
    return data[:ENV_INPUT_CAP_BYTES].decode("utf-8", errors="ignore")


# ---------------------------------------------------------------------------------- python


class HandlerError(Exception):
    """A python handler that cannot be loaded; the message names the handler."""


@dataclass(frozen=True, slots=True)
class _Handler:
    fn: Callable[..., Any]
    arity: int  # how many of (input, context) it takes
    is_async: bool
    inline: bool  # sync and marked ``symbi_inline = True``: call on the loop, no thread


@functools.lru_cache(maxsize=256)
def resolve_handler(spec: str) -> _Handler:
    """Import ``"package.module:function"`` (dotted attributes allowed after the colon) and
    inspect it once. Raises :class:`HandlerError`; failures are not cached, so a fixed module
    loads on the next run."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(f"handler `{spec}` is not of the form `package.module:function`")
    try:
        obj: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        raise HandlerError(f"cannot load handler `{spec}`: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerError(
                f"cannot load handler `{spec}`: `{module_name}` has no attribute `{attr}`"
            ) from None
    if not callable(obj):
        raise HandlerError(f"handler `{spec}` is not callable")
    arity = 2
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature: assume (input, context)
        sig = None
    if sig is not None:
        for n in (2, 1, 0):
            try:
                sig.bind(*([None] * n))
            except TypeError:
                continue
            arity = n
            break
        else:
            raise HandlerError(f"handler `{spec}` must accept (input, context) or (input)")
    is_async = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - async callable objects
    )
    inline = not is_async and bool(getattr(obj, "symbi_inline", False))
    return _Handler(fn=obj, arity=arity, is_async=is_async, inline=inline)


def describe_exception(exc: BaseException) -> str:
    """``"Type: message (at file:line in function)"`` — the innermost frame only."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno} in {last.name})"
    return text


def _to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):  # mixed-type keys, circular data
        return str(value)


def _cap_chars(text: str) -> str:
    if len(text) <= OUTPUT_CAP_CHARS:
        return text
    return (
        text[:OUTPUT_CAP_CHARS]
        + f"\n[symbi: output truncated: kept the first {OUTPUT_CAP_CHARS} of {len(text)} characters]"
    )


def result_from_value(value: Any) -> ExecResult:
    """A handler's return value as a succeeded result: str → output; dict → its ``output``
    (else the whole dict as JSON) and ``summary``; anything else → JSON (or ``str``)."""
    summary: str | None = None
    if isinstance(value, dict):
        out = value.get("output")
        output = _to_text(out) if out not in (None, "") else _to_text(value)
        raw_summary = value.get("summary")
        if raw_summary not in (None, ""):
            summary = _to_text(raw_summary)
    else:
        output = _to_text(value)
    return ExecResult(status=STATUS_SUCCEEDED, output=_cap_chars(output), summary=summary)


# A sync handler's outcome as handed back to the loop: (True, value) or (False, exception).
_Outcome = tuple[bool, Any]
_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[_Outcome]"]


class _SyncPool:
    """Worker threads for the sync handlers of one event loop.

    Cheaper than ``asyncio.to_thread`` (which costs a ``concurrent.futures`` future, a context
    copy and one loop wake-up per call): a worker takes calls from a queue back to back, and
    finished calls are handed back in batches — the first result of a batch schedules one
    ``call_soon_threadsafe``; results finished before the loop gets to it ride along.
    Threads are daemons, started on demand up to ``max_workers`` and ended after
    ``idle_seconds`` without work, so neither an abandoned (timed-out) handler nor an idle
    pool holds up interpreter exit."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_workers: int = SYNC_WORKERS_MAX,
        idle_seconds: float = SYNC_WORKER_IDLE_SECONDS,
    ) -> None:
        # Weak: the pool is a value of a WeakKeyDictionary keyed by this loop.
        self._loop_ref = weakref.ref(loop)
        self._max_workers = max_workers
        self._idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards every field below
        self._workers = 0
        self._idle = 0  # workers not running a call
        self._queued = 0  # calls put on the queue and not yet taken by a worker
        self._done: list[tuple[asyncio.Future[_Outcome], _Outcome]] = []
        self._wake_scheduled = False

    async def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """``fn(*args)`` in a worker thread; raises what it raised. Cancelling the caller
        before a worker takes the call skips it; once running, the thread runs to the end and
        its outcome is dropped."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Outcome] = loop.create_future()
        with self._lock:
            self._queued += 1
            # Enough idle workers for every queued call, or one more thread (a busy worker
            # may block for a long time, so queued calls must not wait behind it).
            spawn = self._queued > self._idle and self._workers < self._max_workers
            if spawn:
                self._workers += 1
                self._idle += 1
        self._jobs.put((fn, args, fut))
        if spawn:
            threading.Thread(target=self._work, name="symbi-handler", daemon=True).start()
        ok, value = await fut
        if ok:
            return value
        try:
            raise value
        finally:
            del value  # no frame <-> traceback cycle

    def _work(self) -> None:
        jobs = self._jobs
        lock = self._lock
        while True:
            try:
                fn, args, fut = jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                with lock:
                    if self._queued > 0:  # a call arrived as the wait ran out: take it
                        continue
                    self._workers -= 1
                    self._idle -= 1
                return
            with lock:
                self._queued -= 1
                self._idle -= 1
            outcome: _Outcome
            if fut.cancelled():  # timed out or cancelled while queued: don't start it
                outcome = (False, None)
            else:
                try:
                    outcome = (True, fn(*args))
                except BaseException as exc:  # noqa: BLE001 - re-raised on the loop
                    outcome = (False, exc)
            del fn, args
            with lock:
                self._idle += 1
                self._done.append((fut, outcome))
                wake = not self._wake_scheduled
                self._wake_scheduled = True
            del fut, outcome
            if wake:
                self._wake()

    def _wake(self) -> None:
        loop = self._loop_ref()
        try:
            if loop is None:
                raise RuntimeError("event loop is gone")
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # loop closed or collected: nobody awaits these outcomes
            with self._lock:
                self._done.clear()
                self._wake_scheduled = False

    def _deliver(self) -> None:
        """On the loop: resolve every future finished since the last delivery."""
        with self._lock:
            done, self._done = self._done, []
            self._wake_scheduled = False
        for fut, outcome in done:
            if not fut.done():  # a cancelled (timed-out) call's outcome is dropped
                fut.set_result(outcome)


class PythonExecutor:
    """Calls ``AgentDef.handler``. A sync handler runs in a worker thread (a timeout then
    abandons the thread, which Python cannot stop) unless marked ``symbi_inline = True``: it is
    then called on the event loop, and a timeout cannot interrupt it. The worker threads are a
    small daemon pool per event loop (:class:`_SyncPool`), owned by this instance."""

    def __init__(self) -> None:
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _SyncPool] = (
            weakref.WeakKeyDictionary()
        )

    def _pool(self) -> _SyncPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _SyncPool(loop)
        return pool

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Run the handler; see the class docstring."""
        agent = req.agent
        if not agent.handler:
            return _failed(f"agent `{agent.name}` uses executor `python` but has no `handler`")
        try:
            handler = resolve_handler(agent.handler)
        except HandlerError as exc:
            return _failed(str(exc))
        if handler.arity == 2:
            args: tuple[Any, ...] = (
                req.input,
                req.context if req.context is not None else AgentContext(),
            )
        else:
            args = (req.input,)[: handler.arity]
        timeout = _effective_timeout(req)
        if timeout is None:
            try:
                value = await self._call(handler, args)
            except asyncio.CancelledError:
                raise
            except (Exception, SystemExit) as exc:  # sys.exit() in a handler fails the run
                return _failed(describe_exception(exc))
            return result_from_value(value)

        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                value = await self._call(handler, args)
        except TimeoutError as exc:
            if not deadline.expired():  # the handler's own TimeoutError
                return _failed(describe_exception(exc))
            error = f"timed out after {_fmt_seconds(timeout)}"
            if not handler.is_async and not handler.inline:
                error += " (the handler's thread cannot be stopped and may still be running)"
            return ExecResult(status=STATUS_TIMED_OUT, error=error)
        except asyncio.CancelledError:
            raise
        except (Exception, SystemExit) as exc:
            return _failed(describe_exception(exc))
        return result_from_value(value)

    async def _call(self, handler: _Handler, args: tuple[Any, ...]) -> Any:
        if handler.is_async:
            value = await handler.fn(*args)
        elif handler.inline:
            value = handler.fn(*args)
        else:
            value = await self._pool().call(handler.fn, args)
        if inspect.isawaitable(value):  # a sync function that returned a coroutine
            value = await value
        return value


# ------------------------------------------------------------------------------------ http


class HttpExecutor:
    """Sends one request to ``AgentDef.url``; see the module docstring.

    ``${NAME}`` in the url and header values is expanded from the run environment at run time
    (so secrets stay references in the bundle and the store). A run with no timeout of its own
    gets ``default_timeout_seconds``. Runs are not retried here (the scheduler retries runs).
    """

    def __init__(
        self,
        *,
        default_timeout_seconds: float = HTTP_DEFAULT_TIMEOUT_SECONDS,
        output_cap_bytes: int = OUTPUT_CAP_BYTES,
    ) -> None:
        self.default_timeout_seconds = default_timeout_seconds
        self.output_cap_bytes = output_cap_bytes

    def _prepare(self, req: ExecRequest) -> tuple[str, str, dict[str, str]] | str:
        """Method, url and headers — or an error message."""
        agent = req.agent
        if not agent.url:
            return f"agent `{agent.name}` uses executor `http` but has no `url`"
        env = os.environ if req.env is None else req.env
        where = "url"
        try:
            url = expand(agent.url, env)
            headers: dict[str, str] = {}
            for key, value in agent.headers:
                where = f"header `{key}`"
                headers[key] = expand(value, env)
        except MissingEnvVar as exc:
            return f"{exc} (needed by agent `{agent.name}` {where})"
        if not url.lower().startswith(("http://", "https://")):
            return f"agent `{agent.name}` url {url!r} is not an http:// or https:// URL"
        return (agent.method or "POST").upper(), url, headers

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Send the request; never raises except ``CancelledError``."""
        prepared = self._prepare(req)
        if isinstance(prepared, str):
            return _failed(prepared)
        method, url, headers = prepared
        kwargs: dict[str, Any] = {"headers": headers}
        if method in HTTP_BODY_METHODS:
            kwargs["json"] = {"input": req.input, "job": req.job_name, "run_id": req.run_id}
        elif req.input:
            kwargs["params"] = {"input": req.input}
        timeout = _effective_timeout(req)
        limit = timeout if timeout is not None else self.default_timeout_seconds
        try:
            # the ClientTimeout bounds the whole exchange (connect, send, read): on expiry
            # aiohttp closes the connection, so the server sees the request abandoned
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session,
                session.request(method, url, **kwargs) as resp,
            ):
                body, total = await _read_capped(resp, self.output_cap_bytes)
                status, reason = resp.status, resp.reason
                charset = resp.charset or "utf-8"
        except TimeoutError:
            return ExecResult(
                status=STATUS_TIMED_OUT, error=f"timed out after {_fmt_seconds(limit)} ({url})"
            )
        except aiohttp.InvalidURL:
            return _failed(f"agent `{req.agent.name}` has an invalid url {url!r}")
        except (aiohttp.ClientError, OSError) as exc:
            return _failed(f"cannot reach {url}: {type(exc).__name__}: {exc}")
        try:
            text = body.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            text = body.decode("utf-8", errors="replace")
        if total > len(body):
            text += f"\n[symbi: output truncated: kept the first {len(body)} of {total} bytes]"
        if not 200 <= status < 300:
            detail = text.strip()[:HTTP_ERROR_BODY_CHARS]
            return _failed(
                f"HTTP {status}: {detail}" if detail else f"HTTP {status} {reason or ''}".rstrip(),
                text,
            )
        return _http_result(text)


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, int]:
    """The first ``cap`` bytes of the body and the body's full length (the rest is drained)."""
    kept = bytearray()
    total = 0
    async for chunk in resp.content.iter_any():
        total += len(chunk)
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
    return bytes(kept), total


def _http_result(text: str) -> ExecResult:
    """A 2xx body as a result: a JSON object's ``output``/``summary`` fields when present."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict) and ("output" in data or "summary" in data):
            out = data.get("output")
            raw_summary = data.get("summary")
            return ExecResult(
                status=STATUS_SUCCEEDED,
                output=_to_text(out) if out not in (None, "") else text,
                summary=_to_text(raw_summary) if raw_summary not in (None, "") else None,
            )
    return ExecResult(status=STATUS_SUCCEEDED, output=text)


# --------------------------------------------------------------------- unavailable / none


@dataclass(frozen=True)
class UnavailableExecutor:
    """An executor kind this version does not implement: every run fails saying so."""

    kind: str

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Fail the run with a truthful message."""
        return _failed(f"executor `{self.kind}` is not available in this version of symbi")


class NotExecutableExecutor:
    """For agents with nothing to execute (upstream-only bodies): every run fails."""

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Fail the run naming the agent."""
        return _failed(f"agent `{req.agent.name}` has nothing to execute (agent-not-executable)")


@dataclass(frozen=True)
class UnknownExecutor:
    """An executor name that is not one of ``compiler.ir.EXECUTORS`` (a hand-made AgentDef)."""

    kind: str

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Fail the run naming the executor."""
        return _failed(f"agent `{req.agent.name}` has unknown executor `{self.kind}`")


# ------------------------------------------------------------------------------ registry


@functools.lru_cache(maxsize=64)
def _executor_for_kind(kind: str | None) -> Executor:
    if kind is None:
        return NotExecutableExecutor()
    if kind == "command":
        return CommandExecutor()
    if kind == "python":
        return PythonExecutor()
    if kind == "http":
        return HttpExecutor()
    if kind == "llm":
        from runtime.llm import LlmExecutor  # runtime.llm imports this module

        return LlmExecutor()
    return UnknownExecutor(kind)


def executor_for(agent: AgentDef, config: Config | None = None) -> Executor:
    """The executor for ``agent`` (the agent travels in the request). ``config`` supplies the
    ``[providers.*]`` tables to ``llm`` agents; without it they use the built-in providers.
    Instances are shared, except an ``llm`` executor for a given ``config`` (built per call:
    it only holds the config). Never raises: unusable agents get an executor whose runs fail
    with the reason."""
    if config is not None and agent.executor == "llm":
        from runtime.llm import LlmExecutor

        return LlmExecutor(config)
    return _executor_for_kind(agent.executor)


async def run_agent(
    agent: AgentDef, input: str, *, config: Config | None = None, **kw: Any
) -> ExecResult:
    """Run ``agent`` once; ``config`` as for :func:`executor_for`; ``kw`` are the other
    :class:`ExecRequest` fields."""
    return await executor_for(agent, config).execute(ExecRequest(agent=agent, input=input, **kw))


def derive_summary(output: str, agent_summary: str | None) -> str:
    """The run's summary: the agent's own, else the ``summary`` field of a JSON-object
    output, else the first 500 characters of the output."""
    if agent_summary:
        return agent_summary
    stripped = output.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict):
            value = data.get("summary")
            if isinstance(value, str) and value:
                return value
            if value is not None and not isinstance(value, str | dict | list):
                return str(value)
    return output[:SUMMARY_CHARS]


__all__ = [
    "AgentContext",
    "CommandExecutor",
    "ExecRequest",
    "ExecResult",
    "Executor",
    "HandlerError",
    "HttpExecutor",
    "NotExecutableExecutor",
    "PythonExecutor",
    "UnavailableExecutor",
    "UnknownExecutor",
    "derive_summary",
    "describe_exception",
    "executor_for",
    "resolve_handler",
    "result_from_value",
    "run_agent",
]
