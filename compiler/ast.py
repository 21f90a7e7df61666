"""The syntax tree: frozen, slotted dataclasses of exactly what was written, each with a span.

Values (the right-hand side of ``key: value``) are a small closed set. Upstream-language
constructs (policy rules, functions, ``with`` bodies, statements, expressions) are kept as
generic ``Syntax`` nodes: the runtime never executes them, but ``symbic check`` parses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.source import Span

# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class StringLit:
    """A string. ``value`` has backslash escapes decoded and triple-quoted text dedented;
    ``${NAME}`` references and ``$${`` are kept verbatim (expanded only at run time).
    ``content_start`` is the offset of the first character after the opening quote(s), so a
    diagnostic can point inside the string (valid when ``value`` has no escapes:
    ``raw_offsets`` is True)."""

    span: Span
    value: str
    triple: bool = False
    env_refs: tuple[str, ...] = ()
    content_start: int = 0
    raw_offsets: bool = True


@dataclass(frozen=True, slots=True)
class NumberLit:
    span: Span
    value: int | float
    text: str


@dataclass(frozen=True, slots=True)
class BoolLit:
    span: Span
    value: bool


@dataclass(frozen=True, slots=True)
class NullLit:
    span: Span


@dataclass(frozen=True, slots=True)
class DurationLit:
    """A bare duration literal: ``30s``, ``5m``, ``1h30m``, ``500ms``, ``5.minutes``."""

    span: Span
    text: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Ident:
    span: Span
    name: str


@dataclass(frozen=True, slots=True)
class VaultRef:
    span: Span
    path: str


@dataclass(frozen=True, slots=True)
class ListLit:
    span: Span
    items: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class MapLit:
    """``{ k: v … }`` or a nested block ``key { … }``; entries are Properties."""

    span: Span
    entries: tuple[Property, ...]
    block_form: bool = False  # written as ``key { … }`` (no separator)


Value = (
    StringLit | NumberLit | BoolLit | NullLit | DurationLit | Ident | VaultRef | ListLit | MapLit
)


@dataclass(frozen=True, slots=True)
class Property:
    """``key: value``, ``key = value`` or ``key { … }`` (then ``sep`` is None)."""

    span: Span
    key: str
    key_span: Span
    value: Value
    sep: str | None = ":"


# ---------------------------------------------------------------- upstream syntax


@dataclass(frozen=True, slots=True)
class Syntax:
    """A generic node of the upstream statement/expression language (checked for syntax only).

    ``kind`` names the construct (``let``, ``if``, ``match``, ``call``, ``binop`` …)."""

    kind: str
    span: Span
    children: tuple[object, ...] = ()
    text: str = ""


@dataclass(frozen=True, slots=True)
class TypeRef:
    span: Span
    name: str
    args: tuple[TypeRef, ...] = ()


@dataclass(frozen=True, slots=True)
class Param:
    span: Span
    name: str
    type: TypeRef | None


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """``allow: expr if cond`` / ``deny: …`` / ``require: …`` / ``audit: … with q``."""

    span: Span
    action: str
    expr: object
    condition: object | None = None
    qualifier: object | None = None  # the expression after ``with`` (``audit: all with sig``)


@dataclass(frozen=True, slots=True)
class PolicyDef:
    """Upstream's ``policy NAME { rules }`` or a schedule-policy block ``policy NAME { key: v }``.

    Rule lines become ``rules``; key/value lines (``require_approval: true``) become ``props``."""

    span: Span
    name: str
    name_span: Span
    rules: tuple[PolicyRule, ...] = ()
    props: tuple[Property, ...] = ()


@dataclass(frozen=True, slots=True)
class Capabilities:
    span: Span
    values: ListLit


@dataclass(frozen=True, slots=True)
class WithBlock:
    span: Span
    attrs: tuple[Property, ...]
    body: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class FunctionDef:
    span: Span
    name: str
    name_span: Span
    params: tuple[Param, ...]
    return_type: TypeRef | None
    body: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class TypeDef:
    span: Span
    name: str
    name_span: Span
    definition: object


# ---------------------------------------------------------------- top-level items


@dataclass(frozen=True, slots=True)
class Schedule:
    """``schedule { name: … }`` (anonymous), ``schedule ident { … }`` or ``schedule "n" { … }``."""

    span: Span
    name: StringLit | Ident | None  # the header name, if any
    props: tuple[Property, ...]


@dataclass(frozen=True, slots=True)
class Agent:
    span: Span
    name: str
    name_span: Span
    params: tuple[Param, ...] = ()
    return_type: TypeRef | None = None
    props: tuple[Property, ...] = ()
    capabilities: tuple[Capabilities, ...] = ()
    policies: tuple[PolicyDef, ...] = ()
    functions: tuple[FunctionDef, ...] = ()
    with_blocks: tuple[WithBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class Metadata:
    span: Span
    props: tuple[Property, ...]


@dataclass(frozen=True, slots=True)
class GenericBlock:
    """``channel``, ``memory`` and ``webhook`` blocks: name plus properties/nested items."""

    span: Span
    kind: str
    name: str
    name_span: Span
    props: tuple[Property, ...] = ()
    items: tuple[object, ...] = ()


Item = Schedule | Agent | Metadata | PolicyDef | TypeDef | FunctionDef | GenericBlock


@dataclass(frozen=True, slots=True)
class Module:
    """One parsed file."""

    items: tuple[Item, ...]
