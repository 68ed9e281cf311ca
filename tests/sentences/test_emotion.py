"""Tests for the emoji to firmware-emotion mapping."""

import pytest

from custom_components.xiaozhi.protocol.messages import EMOTIONS
from custom_components.xiaozhi.sentences.emotion import (
    EMOTION_EMOJIS,
    NEUTRAL,
    emoji_for_emotion,
    emotion_for_emojis,
)
from custom_components.xiaozhi.sentences.splitter import SentenceSplitter

# The emotion names the firmware's emoji font and board faces know
# (78/xiaozhi-esp32, e.g. boards/espressif/esp-hi/emoji_display.cc).
FIRMWARE_EMOTIONS = (
    *("neutral", "happy", "laughing", "funny", "sad", "angry", "crying", "loving"),
    *("embarrassed", "surprised", "shocked", "thinking", "winking", "cool"),
    *("relaxed", "delicious", "kissy", "confident", "sleepy", "silly", "confused"),
)


def test_emotions_are_the_firmware_names() -> None:
    assert EMOTIONS == FIRMWARE_EMOTIONS
    assert tuple(EMOTION_EMOJIS) == EMOTIONS
    assert NEUTRAL in EMOTIONS


@pytest.mark.parametrize("emotion", FIRMWARE_EMOTIONS)
def test_each_emotion_round_trips_through_its_emoji(emotion: str) -> None:
    emoji = emoji_for_emotion(emotion)
    assert EMOTION_EMOJIS[emotion] == emoji
    assert emotion_for_emojis([emoji]) == emotion


@pytest.mark.parametrize(
    ("emojis", "emotion"),
    [
        (["😀"], "happy"),
        (["😊"], "happy"),
        (["👍🏻"], "happy"),  # skin tone ignored
        (["❤\ufe0f"], "loving"),  # presentation selector ignored
        (["🤷\u200d♂\ufe0f"], "confused"),  # ZWJ sequence: its first emoji
        (["😵\u200d💫"], "confused"),
        (["🤣"], "laughing"),
        (["😢"], "crying"),
        (["😡"], "angry"),
        (["😴"], "sleepy"),
        (["🌙"], "sleepy"),
        (["😋"], "delicious"),
        (["🇨🇳", "😭", "😀"], "crying"),  # first emoji that maps decides
    ],
)
def test_emotion_for_emojis(emojis: list[str], emotion: str) -> None:
    assert emotion_for_emojis(emojis) == emotion
    assert emotion in EMOTIONS


@pytest.mark.parametrize("emojis", [[], ["🇨🇳"], ["⌚", "🏠"], [""]])
def test_no_emotion_without_an_expressive_emoji(emojis: list[str]) -> None:
    assert emotion_for_emojis(emojis) is None


def test_unknown_emotion_draws_the_neutral_face() -> None:
    assert emoji_for_emotion("bored") == EMOTION_EMOJIS[NEUTRAL] == "😶"


def test_emotion_of_a_split_segment() -> None:
    splitter = SentenceSplitter()
    segments = splitter.feed("😂哈哈，这个笑话不错。") + splitter.flush()
    assert emotion_for_emojis(segments[0].emojis) == "funny"
    assert emotion_for_emojis(segments[1].emojis) is None
