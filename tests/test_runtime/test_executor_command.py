"""The `command` executor with real processes (SPEC §5.4)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import psutil
import pytest

from compiler.ir import AgentDef
from runtime.executor import CommandExecutor, ExecRequest, ExecResult, executor_for, run_agent

BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def agent(command: str | tuple[str, ...], **kw: object) -> AgentDef:
    return AgentDef(name="cmd", executor="command", command=command, **kw)  # type: ignore[arg-type]


async def run(
    command: str | tuple[str, ...],
    input: str = "",
    *,
    executor: CommandExecutor | None = None,
    env: dict[str, str] | None = None,
    agent_env: tuple[tuple[str, str], ...] = (),
    **kw: object,
) -> ExecResult:
    """Run ``command``; ``kw`` go to the request (job_name, run_id, timeout_seconds) or the agent."""
    req_kw = {k: kw.pop(k) for k in ("job_name", "run_id", "timeout_seconds") if k in kw}
    kw["env"] = agent_env
    req = ExecRequest(
        agent=agent(command, **kw), input=input, env=BASE_ENV if env is None else env, **req_kw
    )  # type: ignore[arg-type]
    return await (executor or CommandExecutor()).execute(req)


def gone(pid: int, within: float = 2.0) -> bool:
    """The process stops running within ``within`` seconds (a signalled process needs a moment
    to exit; an unreaped zombie counts as gone: it cannot run again)."""
    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


async def wait_for_file(path: Path, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        await asyncio.sleep(0.005)
    raise AssertionError(f"{path} was never written")


async def test_stdout_is_the_output() -> None:
    r = await run("printf 'hello\\nworld\\n'")
    assert r == ExecResult(status="succeeded", output="hello\nworld\n", exit_code=0)


async def test_input_arrives_on_stdin_and_in_symbi_input() -> None:
    r = await run(
        'cat; printf "|%s|%s|%s" "$SYMBI_INPUT" "$SYMBI_JOB_NAME" "$SYMBI_RUN_ID"',
        "héllo wörld",
        job_name="nightly",
        run_id="r-1",
    )
    assert r.status == "succeeded"
    assert r.output == "héllo wörld|héllo wörld|nightly|r-1"


async def test_outer_run_identity_does_not_leak() -> None:
    env = {**BASE_ENV, "SYMBI_RUN_ID": "outer", "SYMBI_JOB_NAME": "outer"}
    r = await run('printf "[%s][%s]" "${SYMBI_RUN_ID-unset}" "${SYMBI_JOB_NAME-unset}"', env=env)
    assert r.output == "[unset][unset]"


async def test_argv_form_without_shell() -> None:
    r = await run(("printf", "%s|%s", "a b; echo no", "${WHO}"), env={**BASE_ENV, "WHO": "bob"})
    assert r.status == "succeeded"
    assert r.output == "a b; echo no|bob"


async def test_nonzero_exit_fails_with_stderr_tail() -> None:
    r = await run("echo partial; echo 'oops: disk on fire' >&2; exit 3")
    assert r.status == "failed"
    assert r.exit_code == 3
    assert r.output == "partial\n"
    assert r.error == "exit status 3: oops: disk on fire"


async def test_exit_without_stderr() -> None:
    r = await run("exit 2")
    assert (r.status, r.error, r.exit_code) == ("failed", "exit status 2", 2)


async def test_stderr_tail_is_the_last_two_kilobytes() -> None:
    r = await run("head -c 20000 /dev/zero | tr '\\0' x >&2; echo THE-END >&2; exit 1")
    assert r.status == "failed"
    assert r.error is not None
    assert r.error.startswith("exit status 1: …x")
    assert r.error.endswith("THE-END")
    assert len(r.error) < 2100


async def test_killed_by_signal_is_named() -> None:
    r = await run("kill -9 $$")
    assert (r.status, r.exit_code, r.error) == ("failed", -9, "killed by SIGKILL")


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    r = await run(f"sleep 30 & echo $! > {pidfile}; echo started; wait", timeout_seconds=0.2)
    elapsed = time.monotonic() - start
    assert r.status == "timed_out"
    assert r.error == "timed out after 0.2s"
    assert r.output == "started\n"  # what it printed before the timeout is kept
    assert gone(int(pidfile.read_text()))
    assert elapsed < 3


async def test_sigterm_ignored_escalates_to_sigkill(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    ex = CommandExecutor(kill_grace_seconds=0.1)
    # an ignored signal stays ignored across exec: the shell and its sleep both ignore SIGTERM
    r = await run(
        f"trap '' TERM; sleep 30 & echo $! > {pidfile}; wait", executor=ex, timeout_seconds=0.2
    )
    assert r.status == "timed_out"
    assert r.exit_code == -9
    assert gone(int(pidfile.read_text()))


async def test_agent_timeout_applies_without_request_timeout() -> None:
    req = ExecRequest(agent=agent("sleep 30", timeout_seconds=0.15), input="", env=BASE_ENV)
    r = await CommandExecutor().execute(req)
    assert (r.status, r.error) == ("timed_out", "timed out after 0.15s")


async def test_smaller_of_agent_and_request_timeout_wins() -> None:
    req = ExecRequest(
        agent=agent("sleep 30", timeout_seconds=60), input="", env=BASE_ENV, timeout_seconds=0.1
    )
    r = await CommandExecutor().execute(req)
    assert (r.status, r.error) == ("timed_out", "timed out after 0.1s")


async def test_cancellation_kills_the_group_and_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    task = asyncio.create_task(run(f"sleep 30 & echo $$ $! > {pidfile}; wait"))
    leader, child = (int(p) for p in (await wait_for_file(pidfile)).split())
    assert not gone(child, within=0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(leader)
    assert gone(child)


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 4, 6])
async def test_cancellation_while_spawning_does_not_wait_for_the_children(
    tmp_path: Path, yields: int
) -> None:
    # cancel at different points of the spawn (the child is forked before asyncio has
    # connected its pipes): the run must still end its group at once, not after `sleep 30`
    pidfile = tmp_path / "pids"
    start = time.monotonic()
    task = asyncio.create_task(run(f"sleep 30 & echo $$ $! > {pidfile}; wait"))
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - start < 5
    if pidfile.exists() and pidfile.read_text().strip():  # the child got as far as writing it
        assert all(gone(int(pid)) for pid in pidfile.read_text().split())


async def test_background_process_left_behind_ends_with_the_run(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    start = time.monotonic()
    r = await run(f"sleep 30 & echo $! > {pidfile}; echo done")
    assert (r.status, r.output) == ("succeeded", "done\n")
    assert gone(int(pidfile.read_text()))
    assert time.monotonic() - start < 3


async def test_missing_program_is_a_failed_run_not_an_exception() -> None:
    r = await run(("definitely-not-a-program-xyz", "arg"))
    assert r.status == "failed"
    assert r.error == "cannot run `definitely-not-a-program-xyz`: program not found"


async def test_missing_program_in_shell_form_fails_with_127() -> None:
    r = await run("definitely-not-a-program-xyz")
    assert (r.status, r.exit_code) == ("failed", 127)
    assert r.error is not None and "not found" in r.error


async def test_not_executable_file(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # no x bit
    r = await run((str(script),))
    assert (r.status, r.error) == ("failed", f"cannot run `{script}`: permission denied")


async def test_agent_env_values_are_expanded_from_the_run_environment() -> None:
    env = {**BASE_ENV, "WHO": "bob"}
    r = await run('printf %s "$GREETING"', env=env, agent_env=(("GREETING", "hi ${WHO}"),))
    assert r.output == "hi bob"


async def test_missing_env_var_fails_the_run_naming_it() -> None:
    r = await run("true", agent_env=(("TOKEN", "${NOT_SET_ANYWHERE}"),))
    assert r.status == "failed"
    assert r.error == (
        "environment variable `NOT_SET_ANYWHERE` is not set (needed by agent `cmd` env `TOKEN`)"
    )


async def test_shell_reference_to_missing_env_var_fails() -> None:
    r = await run('echo "${NOT_SET_ANYWHERE}"')
    assert r.status == "failed"
    assert r.error is not None
    assert r.error.startswith("environment variable `NOT_SET_ANYWHERE` is not set")


async def test_shell_references_are_not_spliced_into_shell_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    env = {**BASE_ENV, "MSG": f"hi; touch {marker}"}
    r = await run('printf %s "${MSG}"', env=env)
    assert r.output == f"hi; touch {marker}"
    assert not marker.exists()


async def test_escaped_reference_reaches_the_shell() -> None:
    r = await run('F=loopvar; printf %s "$${F}"')
    assert r.output == "loopvar"


async def test_working_dir(tmp_path: Path) -> None:
    r = await run("pwd", working_dir=str(tmp_path))
    assert Path(r.output.strip()).resolve() == tmp_path.resolve()


async def test_working_dir_expands_references(tmp_path: Path) -> None:
    r = await run("pwd", env={**BASE_ENV, "WD": str(tmp_path)}, working_dir="${WD}")
    assert Path(r.output.strip()).resolve() == tmp_path.resolve()


async def test_missing_working_dir(tmp_path: Path) -> None:
    r = await run("pwd", working_dir=str(tmp_path / "nope"))
    assert r.status == "failed"
    assert r.error == f"working_dir `{tmp_path / 'nope'}` of agent `cmd` is not a directory"


async def test_output_is_capped_and_says_so() -> None:
    ex = CommandExecutor(output_cap_bytes=1000)
    r = await run("head -c 5000 /dev/zero | tr '\\0' a", executor=ex)
    assert r.status == "succeeded"
    assert r.output.startswith("a" * 1000 + "\n[symbi: output truncated")
    assert "kept the first 1000 of 5000 bytes" in r.output


async def test_invalid_utf8_output_is_replaced_not_fatal() -> None:
    r = await run("printf 'ok \\377\\376 end'")
    assert (r.status, r.output) == ("succeeded", "ok \ufffd\ufffd end")


async def test_child_that_ignores_a_large_input() -> None:
    r = await run("true", "x" * (2 << 20))
    assert (r.status, r.output) == ("succeeded", "")


async def test_large_input_is_cut_in_env_but_whole_on_stdin() -> None:
    text = "y" * 200_000
    r = await run('printf "%s " "${SYMBI_INPUT_TRUNCATED:-0}" "${#SYMBI_INPUT}"; wc -c', text)
    assert r.status == "succeeded"
    assert r.output.split() == ["1", "65536", "200000"]


async def test_agent_without_command() -> None:
    r = await CommandExecutor().execute(
        ExecRequest(agent=AgentDef(name="empty", executor="command"), input="")
    )
    assert (r.status, r.error) == (
        "failed",
        "agent `empty` uses executor `command` but has no `command`",
    )


async def test_executor_for_and_run_agent_use_the_command_executor() -> None:
    a = agent("cat")
    assert isinstance(executor_for(a), CommandExecutor)
    assert executor_for(a) is executor_for(agent("other"))  # shared, cached instance
    r = await run_agent(a, "via run_agent", env=BASE_ENV)
    assert (r.status, r.output) == ("succeeded", "via run_agent")


async def test_concurrent_runs_do_not_mix_output() -> None:
    results = await asyncio.gather(*(run(f"printf {i}; sleep 0.0{i % 3}") for i in range(8)))
    assert [r.output for r in results] == [str(i) for i in range(8)]
