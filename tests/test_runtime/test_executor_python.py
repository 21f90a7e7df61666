"""The `python` executor: real modules written to tmp_path and imported (SPEC §5.4)."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compiler.ir import AgentDef
from runtime.executor import (
    AgentContext,
    ExecRequest,
    ExecResult,
    PythonExecutor,
    _SyncPool,
    executor_for,
    resolve_handler,
    run_agent,
)

_counter = itertools.count()

MakeModule = Callable[[str], str]


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeModule]:
    """Write ``source`` as a fresh, uniquely named module importable by the executor."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str) -> str:
        name = f"symbi_test_handlers_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


async def run(handler: str, input: str = "", **kw: object) -> ExecResult:
    agent = AgentDef(name="py", executor="python", handler=handler)
    return await PythonExecutor().execute(ExecRequest(agent=agent, input=input, **kw))  # type: ignore[arg-type]


async def test_sync_two_argument_handler_gets_input_and_context(make_module: MakeModule) -> None:
    mod = make_module("""
        def run(input, context):
            return f"{input}|{context.summary_in}|{context.memory.get('k')}"
    """)
    ctx = AgentContext(memory={"k": "v"}, summary_in="previous")
    r = await run(f"{mod}:run", "hello", context=ctx)
    assert r == ExecResult(status="succeeded", output="hello|previous|v")


async def test_two_argument_handler_gets_a_fresh_context_when_none_given(
    make_module: MakeModule,
) -> None:
    mod = make_module("""
        def run(input, context):
            return repr((context.messages, context.memory, context.summary_in))
    """)
    assert (await run(f"{mod}:run")).output == "([], {}, None)"


async def test_one_argument_handler(make_module: MakeModule) -> None:
    mod = make_module("def run(text):\n    return text.upper()\n")
    assert (await run(f"{mod}:run", "shout")).output == "SHOUT"


async def test_handler_with_optional_context(make_module: MakeModule) -> None:
    mod = make_module("def run(text, context=None):\n    return type(context).__name__\n")
    assert (await run(f"{mod}:run")).output == "AgentContext"


async def test_async_handler(make_module: MakeModule) -> None:
    mod = make_module("""
        import asyncio
        async def run(input, context):
            await asyncio.sleep(0)
            return {"output": input[::-1], "summary": "reversed"}
    """)
    r = await run(f"{mod}:run", "abc")
    assert r == ExecResult(status="succeeded", output="cba", summary="reversed")


async def test_dotted_attribute_after_the_colon(make_module: MakeModule) -> None:
    mod = make_module("""
        class Agent:
            @staticmethod
            def run(input):
                return "static " + input
    """)
    assert (await run(f"{mod}:Agent.run", "ok")).output == "static ok"


async def test_sync_handler_runs_off_the_loop_thread_unless_inline(make_module: MakeModule) -> None:
    mod = make_module("""
        import threading
        def threaded(input):
            return threading.current_thread().name
        def inline(input):
            return threading.current_thread().name
        inline.symbi_inline = True
    """)
    loop_thread = threading.current_thread().name
    assert (await run(f"{mod}:threaded")).output != loop_thread
    assert (await run(f"{mod}:inline")).output == loop_thread


@pytest.mark.parametrize(
    ("body", "output", "summary"),
    [
        ('return {"output": "text", "summary": "short"}', "text", "short"),
        ('return {"output": "text"}', "text", None),
        ('return {"status": "fine", "n": 2}', '{"n": 2, "status": "fine"}', None),
        ('return {"output": "", "summary": "s"}', '{"output": "", "summary": "s"}', "s"),
        ('return {"output": {"a": [1, 2]}}', '{"a": [1, 2]}', None),
        ("return None", "", None),
        ("return [1, 'two']", '[1, "two"]', None),
        ("return 42", "42", None),
        ("return b'bytes \\xff'", "bytes \ufffd", None),
        ('return "ünï"', "ünï", None),
    ],
)
async def test_return_values(
    make_module: MakeModule, body: str, output: str, summary: str | None
) -> None:
    mod = make_module(f"def run(input):\n    {body}\n")
    assert await run(f"{mod}:run") == ExecResult(status="succeeded", output=output, summary=summary)


async def test_exception_fails_with_type_message_and_last_frame(make_module: MakeModule) -> None:
    mod = make_module("""
        def helper():
            raise ValueError("bad input: 7")
        def run(input):
            return helper()
    """)
    r = await run(f"{mod}:run")
    assert r.status == "failed"
    assert r.error is not None
    assert r.error.startswith("ValueError: bad input: 7 (at ")
    assert r.error.endswith(f"{mod}.py:3 in helper)")  # the innermost frame only
    assert "Traceback" not in r.error and "\n" not in r.error


async def test_exception_in_async_handler(make_module: MakeModule) -> None:
    mod = make_module("async def run(input):\n    raise KeyError('k')\n")
    r = await run(f"{mod}:run")
    assert r.status == "failed"
    assert r.error is not None and r.error.startswith("KeyError: 'k' (at ")


async def test_sys_exit_in_handler_fails_the_run(make_module: MakeModule) -> None:
    mod = make_module("import sys\ndef run(input):\n    sys.exit(3)\n")
    r = await run(f"{mod}:run")
    assert r.status == "failed"
    assert r.error is not None and r.error.startswith("SystemExit: 3")


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (
            "no_such_module_xyz:run",
            "cannot load handler `no_such_module_xyz:run`: ModuleNotFoundError: No module named 'no_such_module_xyz'",
        ),
        ("just_a_name", "handler `just_a_name` is not of the form `package.module:function`"),
        (":run", "handler `:run` is not of the form `package.module:function`"),
        ("json:", "handler `json:` is not of the form `package.module:function`"),
        (
            "json:no_such_function",
            "cannot load handler `json:no_such_function`: `json` has no attribute `no_such_function`",
        ),
        ("json:__doc__", "handler `json:__doc__` is not callable"),
    ],
)
async def test_handler_that_cannot_be_loaded(handler: str, error: str) -> None:
    assert await run(handler) == ExecResult(status="failed", error=error)


async def test_module_that_raises_on_import(make_module: MakeModule) -> None:
    mod = make_module("raise RuntimeError('import-time failure')\n")
    r = await run(f"{mod}:run")
    assert r == ExecResult(
        status="failed", error=f"cannot load handler `{mod}:run`: RuntimeError: import-time failure"
    )


async def test_handler_with_wrong_signature(make_module: MakeModule) -> None:
    mod = make_module("def run(a, b, c):\n    return ''\n")
    r = await run(f"{mod}:run")
    assert r == ExecResult(
        status="failed", error=f"handler `{mod}:run` must accept (input, context) or (input)"
    )


async def test_agent_without_handler() -> None:
    r = await PythonExecutor().execute(
        ExecRequest(agent=AgentDef(name="h", executor="python"), input="")
    )
    assert r == ExecResult(
        status="failed", error="agent `h` uses executor `python` but has no `handler`"
    )


async def test_failed_resolution_is_not_cached(make_module: MakeModule, tmp_path: Path) -> None:
    name = f"symbi_test_late_{next(_counter)}"
    first = await run(f"{name}:run")
    assert first.status == "failed"
    (tmp_path / f"{name}.py").write_text("def run(input):\n    return 'now it exists'\n")
    try:
        assert (await run(f"{name}:run")).output == "now it exists"
    finally:
        sys.modules.pop(name, None)


async def test_resolution_is_cached_per_handler(make_module: MakeModule) -> None:
    mod = make_module("def run(input):\n    return ''\n")
    assert resolve_handler(f"{mod}:run") is resolve_handler(f"{mod}:run")


async def test_async_handler_timeout(make_module: MakeModule) -> None:
    mod = make_module("""
        import asyncio
        async def run(input):
            await asyncio.sleep(30)
    """)
    r = await run(f"{mod}:run", timeout_seconds=0.1)
    assert r == ExecResult(status="timed_out", error="timed out after 0.1s")


async def test_sync_handler_timeout_says_the_thread_may_still_run(make_module: MakeModule) -> None:
    mod = make_module("""
        import threading
        release = threading.Event()
        def run(input):
            release.wait(30)
            return "late"
    """)
    try:
        r = await run(f"{mod}:run", timeout_seconds=0.1)
    finally:
        sys.modules[mod].release.set()  # let the abandoned thread finish
    assert r.status == "timed_out"
    assert (
        r.error
        == "timed out after 0.1s (the handler's thread cannot be stopped and may still be running)"
    )


async def test_handlers_own_timeout_error_is_a_failure_not_a_timeout(
    make_module: MakeModule,
) -> None:
    mod = make_module("def run(input):\n    raise TimeoutError('upstream too slow')\n")
    r = await run(f"{mod}:run", timeout_seconds=5)
    assert r.status == "failed"
    assert r.error is not None and r.error.startswith("TimeoutError: upstream too slow")


async def test_agent_timeout_applies(make_module: MakeModule) -> None:
    mod = make_module("import asyncio\nasync def run(input):\n    await asyncio.sleep(30)\n")
    agent = AgentDef(name="py", executor="python", handler=f"{mod}:run", timeout_seconds=0.05)
    r = await run_agent(agent, "")
    assert (r.status, r.error) == ("timed_out", "timed out after 0.05s")


async def test_cancellation_reaches_an_async_handler(make_module: MakeModule) -> None:
    mod = make_module("""
        import asyncio
        state = {"started": asyncio.Event(), "cancelled": False}
        async def run(input):
            state["started"].set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise
    """)
    task = asyncio.create_task(run(f"{mod}:run"))
    await asyncio.sleep(0)
    state = sys.modules[mod].state
    await asyncio.wait_for(state["started"].wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state["cancelled"] is True


def test_executor_for_python_is_shared() -> None:
    a = AgentDef(name="a", executor="python", handler="x:y")
    b = AgentDef(name="b", executor="python", handler="z:w")
    assert isinstance(executor_for(a), PythonExecutor)
    assert executor_for(a) is executor_for(b)


# ------------------------------------------------------- the worker pool for sync handlers


async def test_many_concurrent_sync_runs_each_get_their_own_result(make_module: MakeModule) -> None:
    # Results come back to the loop in batches: each must still reach its own caller.
    mod = make_module("""
        import threading
        def run(input):
            return f"{input}@{threading.current_thread().name}"
    """)
    loop_thread = threading.current_thread().name
    ex = PythonExecutor()
    agent = AgentDef(name="py", executor="python", handler=f"{mod}:run")
    results = await asyncio.gather(
        *(ex.execute(ExecRequest(agent=agent, input=str(i))) for i in range(500))
    )
    for i, r in enumerate(results):
        assert r.status == "succeeded"
        value, _, thread = r.output.partition("@")
        assert value == str(i)
        assert thread not in ("", loop_thread)


async def test_blocking_sync_handlers_run_side_by_side(make_module: MakeModule) -> None:
    # Threads start on demand: three handlers that can only finish together must not queue
    # behind each other.
    mod = make_module("""
        import threading
        barrier = threading.Barrier(3)
        def run(input):
            barrier.wait(timeout=5)
            return input
    """)
    results = await asyncio.gather(
        *(run(f"{mod}:run", str(i), timeout_seconds=10) for i in range(3))
    )
    assert [r.output for r in results] == ["0", "1", "2"]


async def test_a_call_cancelled_while_queued_never_runs() -> None:
    pool = _SyncPool(asyncio.get_running_loop(), max_workers=1)
    release = threading.Event()
    ran: list[str] = []

    def blocker() -> str:
        release.wait(5)
        return "first"

    first = asyncio.create_task(pool.call(blocker, ()))
    second = asyncio.create_task(pool.call(ran.append, ("second",)))
    await asyncio.sleep(0.01)  # both submitted; the single worker is stuck in blocker()
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release.set()
    assert await first == "first"
    assert await pool.call(ran.append, ("third",)) is None  # the worker took the next call
    assert ran == ["third"]


async def test_pool_call_reraises_the_handlers_exception() -> None:
    pool = _SyncPool(asyncio.get_running_loop())

    def boom() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError, match="'k'") as info:
        await pool.call(boom, ())
    assert info.traceback[-1].name == "boom"  # the handler's own frame is the innermost one


async def test_idle_workers_end() -> None:
    pool = _SyncPool(asyncio.get_running_loop(), idle_seconds=0.02)
    worker = await pool.call(lambda: threading.current_thread(), ())
    assert worker.daemon
    for _ in range(200):
        if not worker.is_alive():
            break
        await asyncio.sleep(0.01)
    assert not worker.is_alive()
    assert await pool.call(lambda: "again", ()) == "again"  # a new worker starts on demand


async def test_stop_iteration_from_a_sync_handler_fails_the_run(make_module: MakeModule) -> None:
    mod = make_module("def run(input):\n    raise StopIteration\n")
    r = await run(f"{mod}:run", timeout_seconds=5)
    assert r.status == "failed"
    assert r.error is not None and "StopIteration" in r.error


def test_process_with_an_abandoned_handler_thread_exits_promptly(tmp_path: Path) -> None:
    # A timed-out handler that keeps blocking must not hold up interpreter exit, and one that
    # finishes after its loop has closed must not raise in its thread.
    (tmp_path / "slow_handlers.py").write_text(
        textwrap.dedent("""
            import time
            def stuck(input):
                time.sleep(120)
            def late(input):
                time.sleep(0.2)
                return "late"
        """)
    )
    script = textwrap.dedent("""
        import asyncio, time
        from compiler.ir import AgentDef
        from runtime.executor import run_agent

        async def main():
            for name in ("stuck", "late"):
                agent = AgentDef(name=name, executor="python", handler=f"slow_handlers:{name}")
                r = await run_agent(agent, "", timeout_seconds=0.05)
                print(name, r.status)

        asyncio.run(main())
        time.sleep(0.4)  # `late` finishes meanwhile and finds its loop closed
        print("exiting")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == ["stuck timed_out", "late timed_out", "exiting", ""]
    assert proc.stderr == ""
    assert elapsed < 20  # the stuck handler sleeps 120 s
