"""The ``echo`` agent: returns its input. Used by the examples, the README demo and tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.executor import AgentContext


def run(input: str, context: AgentContext | None = None) -> str:
    """Return ``input`` unchanged, or ``"(no input)"`` when it is empty."""
    return input if input else "(no input)"


# Trivially cheap and never blocks: the python executor may call it on the event loop.
run.symbi_inline = True  # type: ignore[attr-defined]
