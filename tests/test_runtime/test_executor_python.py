"""The `python` executor: real modules written to tmp_path and imported (SPEC §5.4)."""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from compiler.ir import AgentDef
from runtime.executor import (
    AgentContext,
    ExecRequest,
    ExecResult,
    PythonExecutor,
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
