"""Device-supplied text made safe to show: every control character escaped, bounded."""

import unicodedata

from hypothesis import given, strategies as st

from custom_components.xiaozhi.protocol.sanitize import (
    MAX_SHOWN_CHARS,
    clean_field,
    printable,
)
from tests.helpers.fuzzing import fuzz

UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def test_controls_and_format_characters_are_escaped() -> None:
    assert printable("a\nb\r\x1b[31m") == "a\\x0ab\\x0d\\x1b[31m"
    assert printable("x\u202ey\u2028z\ufeff") == "x\\u202ey\\u2028z\\ufeff"
    assert printable("\U000e0001") == "\\U000e0001"
    assert printable("面包板 ok\\n") == "面包板 ok\\n"
    assert printable(ValueError("bad\nline")) == "bad\\x0aline"


def test_long_text_is_cut_and_says_how_long_it_was() -> None:
    assert printable("x" * 10_000) == "x" * MAX_SHOWN_CHARS + "... (10000 characters)"
    assert printable("\n" * 10, limit=8) == "\\x0a\\x0a... (10 characters)"
    assert printable("abc", limit=3) == "abc"


def test_stored_fields_are_cut_without_a_note() -> None:
    assert clean_field(" board\n", 64) == "board\\x0a"
    assert clean_field("b" * 100, 64) == "b" * 64


@fuzz
@given(st.text(), st.integers(min_value=1, max_value=300))
def test_nothing_unsafe_ever_comes_through(text: str, limit: int) -> None:
    for shown in (printable(text, limit), clean_field(text, limit)):
        assert not any(unicodedata.category(char) in UNSAFE for char in shown)
    head, _, _ = printable(text, limit).partition("... (")
    assert len(head) <= limit
    assert len(clean_field(text, limit)) <= limit
