"""A device's listen detect: its wake word, or a typed request."""

import pytest

from custom_components.xiaozhi.voice.wake_words import (
    KNOWN_WAKE_WORDS,
    WAKE_WORD_AUDIO_BYTES,
    is_wake_word,
    normalized,
)


@pytest.mark.parametrize(
    "text",
    ["你好小智", "你好，小智！", "Hi,ESP", "hi esp", "Alexa", "小土豆", "", " 。"],
)
def test_known_wake_words_without_audio(text: str) -> None:
    assert is_wake_word(text, audio_bytes=0)


@pytest.mark.parametrize(
    "text", ["今天天气怎么样", "打开客厅灯", "What time is it?", "你好小智你好"]
)
def test_other_texts_without_audio_are_typed_requests(text: str) -> None:
    assert not is_wake_word(text, audio_bytes=0)


def test_any_text_after_the_wake_words_audio_is_a_wake_word() -> None:
    assert is_wake_word("小乐小乐", audio_bytes=WAKE_WORD_AUDIO_BYTES)
    # A frame or two still in flight after listen stop is no wake word.
    assert not is_wake_word("小乐小乐", audio_bytes=WAKE_WORD_AUDIO_BYTES - 1)


def test_normalized_drops_case_spaces_and_punctuation() -> None:
    assert normalized("Hi, ESP!") == normalized("hiesp") == "hiesp"
    assert normalized("你好　小智。") == "你好小智"
    assert all(word == normalized(word) and word for word in KNOWN_WAKE_WORDS)
