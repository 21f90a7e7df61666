"""Fixtures shared by the runtime tests: a FakeClock at ``T0``, the state file path and an open
SqliteStore on it, and the sys.path/environment set-up for tests that load python handlers from
this folder. A module that needs another clock or store defines its own fixture of the same
name, which overrides these for that module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_support import T0

from runtime.clock import FakeClock
from runtime.store import SqliteStore

HERE = Path(__file__).parent


@pytest.fixture
def clock() -> FakeClock:
    """A FakeClock standing at ``T0``."""
    return FakeClock(T0)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The path of the test's state file (not created)."""
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path, clock: FakeClock) -> Iterator[SqliteStore]:
    """A migrated SqliteStore on ``db``, reading ``clock``; closed after the test."""
    s = SqliteStore.open(db, clock=clock)
    yield s
    s.close()


@pytest.fixture
def handlers_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python agents named ``test_scheduler_handlers:…``/``context_handlers:…`` resolve."""
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def cli_env(handlers_importable: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """For CLI tests: handlers importable, the working directory a fresh tmp_path, and no
    ``SYMBI_CONFIG`` from the outer environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SYMBI_CONFIG", raising=False)
