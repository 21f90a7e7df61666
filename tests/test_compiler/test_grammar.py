"""The grammar itself: LALR(1) without conflicts, terminals that never collide, the cache."""

from __future__ import annotations

from pathlib import Path

import lark
import pytest
from lark.exceptions import GrammarError

from compiler import parser as parser_mod
from compiler.parser import build_lark, get_lark, grammar_text, parse_text


def test_grammar_is_conflict_free_lalr_in_strict_mode() -> None:
    # strict=True: any shift/reduce conflict (which lark would otherwise resolve silently as a
    # shift), any reduce/reduce conflict and any collision between terminal regexps raises
    parser = build_lark(strict=True)
    assert parser.options.parser == "lalr"
    assert parser.options.lexer == "contextual"


def test_strict_mode_really_detects_conflicts() -> None:
    # the check above is only meaningful if this lark version enforces it
    dangling_else = 'start: "if" start ["else" start] | "x"\n%ignore " "'
    lark.Lark(dangling_else, parser="lalr")  # resolved silently as shift when not strict
    with pytest.raises(GrammarError, match="Shift/Reduce"):
        lark.Lark(dangling_else, parser="lalr", strict=True)


def test_every_terminal_has_human_words() -> None:
    parser = get_lark()
    tables = parser_mod._tables(parser)
    ignored = set(parser.lexer_conf.ignore)
    for term in parser.terminals:
        if term.name in ignored:
            continue
        words = tables.human(term.name)
        assert words.startswith("`") or words.startswith("a "), (term.name, words)


def test_grammar_ships_as_package_data() -> None:
    text = grammar_text()
    assert "start:" in text
    assert (Path(parser_mod.__file__).resolve().parent.parent / "grammar" / "symbi.lark").exists()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SYMBI_CACHE_DIR", str(tmp_path))
    get_lark.cache_clear()
    yield tmp_path
    get_lark.cache_clear()


def test_parser_tables_are_cached_on_disk(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    get_lark()
    (cached,) = cache_dir.glob("grammar-*.pickle")
    assert cached.stat().st_size > 10_000
    get_lark.cache_clear()

    def no_rebuild(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the grammar was analysed again instead of loaded")

    monkeypatch.setattr(lark.Lark, "__init__", no_rebuild)
    module, diags = parse_text('schedule { name: "x" }')
    assert diags == [] and len(module.items) == 1


def test_corrupt_cache_is_rebuilt(cache_dir: Path) -> None:
    get_lark()
    (cached,) = cache_dir.glob("grammar-*.pickle")
    cached.write_bytes(b"not a pickle")
    get_lark.cache_clear()
    module, diags = parse_text('schedule { name: "x" }')
    assert diags == [] and len(module.items) == 1
    assert cached.stat().st_size > 10_000  # rewritten


def test_changed_grammar_gets_a_new_cache_entry(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    get_lark()
    original = grammar_text()
    monkeypatch.setattr(parser_mod, "grammar_text", lambda: original + "\n// edited\n")
    get_lark.cache_clear()
    get_lark()
    assert len(list(cache_dir.glob("grammar-*.pickle"))) == 2


def test_unwritable_cache_dir_still_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SYMBI_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    get_lark.cache_clear()
    try:
        module, diags = parse_text("schedule { }")
        assert diags == [] and len(module.items) == 1
    finally:
        get_lark.cache_clear()
