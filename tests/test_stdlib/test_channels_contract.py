"""One contract for every channel — the five built-ins and the sample third-party channel,
found through a real ``symbi.channels`` entry-point lookup — each against its real local peer:

- ``route`` is a coroutine and delivers one message carrying the run's output and job name;
- a peer that refuses yields ``DeliveryOutcome(ok=False)`` with an error, never an exception;
- through the outbox worker the delivery ends ``delivered`` after one recorded attempt.
"""

from __future__ import annotations

import inspect
import io
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_runtime"))  # shared peers
from test_delivery_peers import (  # noqa: E402
    CUSTOM_SITE,
    Answer,
    HttpPeer,
    SmtpPeer,
    make_config,
    make_context,
    make_run,
    store_finished_run,
)

from compiler.ir import JobDef  # noqa: E402
from runtime.clock import FakeClock  # noqa: E402
from runtime.config import Config  # noqa: E402
from runtime.delivery import (  # noqa: E402
    ChannelRegistry,
    DeliveryOutcome,
    DeliveryWorker,
    list_deliveries,
)
from runtime.store import SqliteStore  # noqa: E402

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
CHANNELS = ("stdout", "log_file", "webhook", "slack", "email", "memo")
OUTPUT = "contract output ✓\nsecond line"


class BreakableStream(io.StringIO):
    """A stdout stand-in that can start failing like a closed pipe."""

    broken = False

    def write(self, s: str) -> int:
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(s)


@dataclass
class Rig:
    """A channel wired to its peer: ``received()`` lists what the peer got (as text),
    ``refuse()`` makes the next delivery fail, ``job`` is set up for the channel."""

    name: str
    config: Config
    registry: ChannelRegistry
    job: JobDef
    received: Callable[[], list[str]]
    refuse: Callable[[], None]
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def smtp() -> Iterator[SmtpPeer]:
    with SmtpPeer() as peer:
        yield peer


@pytest.fixture
async def http() -> AsyncIterator[HttpPeer]:
    peer = await HttpPeer().start()
    yield peer
    await peer.close()


@pytest.fixture(params=CHANNELS)
def rig(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock, http: HttpPeer,
        smtp: SmtpPeer, monkeypatch: pytest.MonkeyPatch) -> Rig:
    name: str = request.param
    monkeypatch.syspath_prepend(str(CUSTOM_SITE))
    config = make_config(tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port,
                         slack_api_url=http.url("/api"), slack_api_token="xoxb-contract")
    stream = BreakableStream()
    registry = ChannelRegistry.discover(make_context(config, clock, stdout=stream))
    base = {"name": "contract-job", "agent": "contract-agent", "cron": "0 7 * * *",
            "delivery": (name,)}
    state: dict[str, Any] = {}

    if name == "stdout":
        def received() -> list[str]:
            text = stream.getvalue()
            return [b for b in text.split("\n\n") if b.strip()]

        def refuse() -> None:
            stream.broken = True

        job = JobDef(**base)
    elif name == "log_file":
        def received() -> list[str]:
            p = config.log_dir / "contract-job.log"
            if not p.exists():
                return []
            text = p.read_text()
            return [e for e in text.split("\n[") if e.strip()]

        def refuse() -> None:
            state["job"] = JobDef(**{**base, "log_file": "../outside.log"})

        job = JobDef(**base)
    elif name == "webhook":
        def received() -> list[str]:
            return [json.dumps(r.json(), ensure_ascii=False) for r in http.at("/hook")
                    if 200 <= r.status < 300]

        def refuse() -> None:
            http.script("/hook", Answer(404, "gone"))

        job = JobDef(**base, webhook_url=http.url("/hook"))
    elif name == "slack":
        http.default("/api/chat.postMessage", Answer(200, '{"ok": true}'))

        def received() -> list[str]:
            return [r.json()["text"] for r in http.at("/api/chat.postMessage")][
                : state.get("ok_count", 10**6)]

        def refuse() -> None:
            state["ok_count"] = len(http.at("/api/chat.postMessage"))
            http.script("/api/chat.postMessage",
                        Answer(200, '{"ok": false, "error": "not_in_channel"}'))

        job = JobDef(**base, slack_channel="#contract")
    elif name == "email":
        def received() -> list[str]:
            return [m.message.get_content() + m.message["Subject"] for m in smtp.inbox.mails]

        def refuse() -> None:
            smtp.inbox.replies.append("554 5.7.1 no thanks")

        job = JobDef(**base, email_recipients=("ops@example.com",))
    else:  # the third-party channel
        def received() -> list[str]:
            p = config.log_dir / "memo-channel.jsonl"
            return ([json.dumps(json.loads(x), ensure_ascii=False)
                     for x in p.read_text().splitlines()] if p.exists() else [])

        def refuse() -> None:
            state["output"] = "memo-fail"

        job = JobDef(**base)
    r = Rig(name, config, registry, job, received, refuse, state)
    return r


def _job(rig: Rig) -> JobDef:
    return rig.extra.get("job", rig.job)


async def test_channel_delivers_one_message(rig: Rig) -> None:
    ch = rig.registry.get(rig.name)
    assert inspect.iscoroutinefunction(ch.route)
    assert ch.name == rig.name
    run = make_run(rig.job, output=OUTPUT)
    outcome = await ch.route(rig.name, rig.job, run, OUTPUT)
    assert isinstance(outcome, DeliveryOutcome)
    assert outcome.ok, outcome.error
    (message,) = rig.received()
    # every channel carries the output (Slack/e-mail/stdout/log may re-wrap it) and the job
    assert "contract output ✓" in message and "second line" in message
    assert "contract-job" in message


async def test_channel_reports_refusal_as_outcome(rig: Rig) -> None:
    ch = rig.registry.get(rig.name)
    rig.refuse()
    output = rig.extra.get("output", OUTPUT)
    job = _job(rig)
    outcome = await ch.route(rig.name, job, make_run(job, output=output), output)
    assert isinstance(outcome, DeliveryOutcome)
    assert not outcome.ok
    assert outcome.error
    assert rig.received() == []


async def test_channel_through_the_outbox_worker(rig: Rig, tmp_path: Path,
                                                 clock: FakeClock) -> None:
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    try:
        store.add_job(rig.job, actor="test")
        run = store_finished_run(store, rig.job.name, output=OUTPUT)
        worker = DeliveryWorker(store, rig.config, clock, rig.registry)
        worker.notify(run.id)
        assert await worker.run_once() == 1
        (receipt,) = list_deliveries(store, run_id=run.id)
        assert (receipt.channel, receipt.status, receipt.attempts) == (rig.name, "delivered", 1)
        assert receipt.history[0].ok
        assert len(rig.received()) == 1
    finally:
        store.close()
