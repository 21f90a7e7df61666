"""Run-time expansion of ``${NAME}`` environment references (SPEC §1.1).

The compiler keeps ``${NAME}`` references as written, through the bundle and the store, so
secrets are never persisted expanded; the runtime expands them here, at the moment of use
(agent ``env``, ``command``, webhook headers, AgentPin tokens, config values).

Rules: ``NAME`` is ``[A-Z_][A-Z0-9_]*``; ``$${`` is a literal ``${``; any other ``$`` (``$HOME``,
``${lower}``, a lone ``${``) is left untouched, so shell text that is not a reference survives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# One alternation so a single left-to-right scan decides between the escape and a reference:
# in "$${A}" the escape wins and "${A}" is produced literally.
_TOKEN = re.compile(r"\$\$\{|\$\{([A-Z_][A-Z0-9_]*)\}")


class MissingEnvVar(LookupError):
    """A ``${NAME}`` reference whose variable is not set in the environment."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"environment variable `{self.name}` is not set"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Return ``text`` with every ``${NAME}`` replaced by ``env[NAME]``.

    ``$${`` becomes a literal ``${``. Raises :class:`MissingEnvVar` for the first reference
    whose variable is absent from ``env`` (an empty value counts as set).
    """
    if "$" not in text:  # the common case: nothing to do, no regex scan
        return text

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is None:
            return "${"
        try:
            return env[name]
        except KeyError:
            raise MissingEnvVar(name) from None

    return _TOKEN.sub(replace, text)


def unescape(text: str) -> str:
    """Return ``text`` with each ``$${`` turned into ``${`` and references left as written.

    Used for ``/bin/sh -c`` command strings: the shell expands ``${NAME}`` itself from the
    child's environment (which holds the variable), so a value is never spliced into shell
    code (no injection), while ``$${F}`` still hands the shell a plain ``${F}``.
    """
    if "$${" not in text:
        return text
    return _TOKEN.sub(lambda m: m.group(0) if m.group(1) is not None else "${", text)


def refs(text: str) -> list[str]:
    """The variable names referenced by ``text``, in order of first appearance, without
    duplicates; escaped ``$${NAME}`` is not a reference."""
    seen: dict[str, None] = {}
    for m in _TOKEN.finditer(text):
        name = m.group(1)
        if name is not None:
            seen.setdefault(name, None)
    return list(seen)
