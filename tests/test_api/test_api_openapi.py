"""The OpenAPI document is true: every route is documented and every documented operation is
served, and schemathesis (positive and negative generated requests against a live server)
finds no 500, no undocumented status, no response that violates its schema."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from conftest import AUTH, Api, LiveServer, config, seed_job
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from runtime.api import create_app, route_table
from runtime.openapi import SCHEMAS, openapi_document
from runtime.store import SqliteStore, format_ts

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def documented() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item
            if m in METHODS}


def test_every_route_is_documented_and_vice_versa(store: SqliteStore) -> None:
    app = create_app(store)
    served = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None}
    assert served == set(route_table())
    assert served == documented()


def test_document_is_consistent() -> None:
    doc = openapi_document()
    ops = [op for item in doc["paths"].values() for m, op in item.items() if m in METHODS]
    ids = [op["operationId"] for op in ops]
    assert len(ids) == len(set(ids))
    text = str(doc)
    for name in SCHEMAS:
        assert f"#/components/schemas/{name}" in text, name
    import re

    for ref in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert ref in SCHEMAS, ref
    for op in ops:  # every link names a real operation
        for resp in op["responses"].values():
            for link in resp.get("links", {}).values():
                assert link["operationId"] in ids
    # the SDK shapes are closed: exactly the dataclass fields, all required
    from symbiont import schedules as sdk

    for name in ("ScheduleSummary", "ScheduleDetail", "CreateScheduleResponse",
                 "ScheduleActionResponse", "DeleteScheduleResponse", "ScheduleRunEntry",
                 "NextRunsResponse", "SchedulerHealthResponse"):
        schema = SCHEMAS[name]
        fields = set(getattr(sdk, name).__dataclass_fields__)
        assert set(schema["properties"]) == set(schema["required"]) == fields, name
        assert schema["additionalProperties"] is False


async def test_served_document_equals_the_module(api: Api) -> None:
    async with api.session.get(api.url("/api/v1/openapi.json")) as resp:
        assert resp.status == 200
        assert await resp.json() == openapi_document()


# ---------------------------------------------------------------- schemathesis

schema = schemathesis.openapi.from_dict(openapi_document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=6, allow_extra_parameters=False)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


class Target:
    """A live server with a job and a run awaiting approval that requests can address."""

    def __init__(self, server: LiveServer, store: SqliteStore):
        self.server = server
        self.store = store
        self.turn = itertools.count()

    def _ensure(self) -> tuple[str, str]:
        if self.store.get_job("st-job") is None:
            seed_job(self.store, "st-job", cron="*/10 * * * *")
        open_ = self.store.query("SELECT run_id FROM approvals WHERE decision IS NULL LIMIT 1")
        if open_:
            return "st-job", open_[0][0]
        run = self.store.request_manual_run("st-job", input=None, actor="test")
        now = self.store.clock.now()
        with self.store.transaction() as conn:
            conn.execute("UPDATE runs SET status = 'awaiting_approval' WHERE id = ?", (run.id,))
            conn.execute("INSERT INTO approvals (run_id, job_id, requested_at, expires_at)"
                         " VALUES (?,?,?,?)", (run.id, run.job_id, format_ts(now),
                                               format_ts(now + timedelta(hours=1))))
        return "st-job", run.id

    def aim(self, case: Any) -> None:
        """Every other case addresses existing objects, so deeper code paths are reached."""
        if next(self.turn) % 2 or not case.path_parameters:
            return
        job, run = self.server.call(self._ensure)
        if "id" in case.path_parameters:
            case.path_parameters["id"] = job
        if "run_id" in case.path_parameters:
            case.path_parameters["run_id"] = run


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    store = SqliteStore.open(tmp_path_factory.mktemp("schemathesis") / "state.db")
    with LiveServer(store, config()) as server:
        yield Target(server, store)
    store.close()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_violation(case: Any, target: Target) -> None:
    target.aim(case)
    case.call_and_validate(base_url=target.server.base, headers=AUTH, checks=CHECKS)
