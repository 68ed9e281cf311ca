"""An engine tells the device's speaker where each sentence's audio starts."""

from collections.abc import AsyncGenerator
from typing import Any, cast

from custom_components.xiaozhi.sentences.marks import (
    SentenceMark,
    attach_marks,
    marks_for,
    text_length,
)


async def message_stream() -> AsyncGenerator[str]:
    yield "你好。\n"


def test_positions_count_the_text_without_whitespace() -> None:
    assert text_length("你好。\n") == 3
    assert text_length(" Hi there. ") == 8


def test_an_engine_finds_the_marks_of_its_stream() -> None:
    stream = message_stream()
    marks = attach_marks(stream)
    assert marks_for(stream) is marks
    told_before = marks.told

    marks.sentence_starts("你好。", 0.0)
    marks.sentence_starts("Hi there.", 0.66)
    assert (told_before, marks.told) == (False, True)
    assert marks.marks == [SentenceMark(0, 0.0), SentenceMark(3, 0.66)]


def test_other_streams_have_no_marks() -> None:
    assert marks_for(message_stream()) is None
    # Not even a stream that cannot be referenced weakly.
    assert marks_for(cast(Any, "text")) is None
