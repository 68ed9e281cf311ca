"""Map emojis of an LLM reply to the emotion names the Xiaozhi firmware shows.

The device receives ``{"type": "llm", "emotion": "happy", "text": "🙂"}`` and only
uses ``emotion`` (``Application`` passes it to ``Display::SetEmotion``). The names
are the firmware's emotion set, ``protocol.messages.EMOTIONS``: the emoji font of
the ``78/xiaozhi-fonts`` component resolves them, and board faces map the same
names (for example ``main/boards/espressif/esp-hi/emoji_display.cc`` and
``main/boards/espressif/esp-vocat/assets/360_360/emote.json`` in
78/xiaozhi-esp32). Unknown names fall back to the neutral face on most boards.
"""

from collections.abc import Mapping, Sequence
from typing import Final

NEUTRAL: Final = "neutral"

# Each of the firmware's emotions -> the emoji its font draws for it, in the
# order of protocol EMOTIONS: 78/xiaozhi-fonts include/noto_emoji.h, which the
# displays' noto_emoji_get_utf8(emotion) reads (NOTO_EMOJI_SURPRISED is U+1F62F
# 😯, not 😲).
EMOTION_EMOJIS: Final[Mapping[str, str]] = {
    "neutral": "😶",
    "happy": "🙂",
    "laughing": "😆",
    "funny": "😂",
    "sad": "😔",
    "angry": "😠",
    "crying": "😭",
    "loving": "😍",
    "embarrassed": "😳",
    "surprised": "😯",
    "shocked": "😱",
    "thinking": "🤔",
    "winking": "😉",
    "cool": "😎",
    "relaxed": "😌",
    "delicious": "🤤",
    "kissy": "😘",
    "confident": "😏",
    "sleepy": "😴",
    "silly": "😜",
    "confused": "🙄",
}

# Further emojis LLMs use, grouped by the emotion that shows them best.
_SIMILAR_EMOJIS: Final[Mapping[str, str]] = {
    "happy": "😀😃😄😁😊☺👍👌✅🎉🥳✨🤗🙌👏💪🌞☀",
    "laughing": "🤣😹",
    "sad": "😞😟🙁☹😥😓💔",
    "crying": "😢😿",
    "angry": "😡🤬💢👿😤",
    "loving": "🥰❤💕💖💗💓💞💘💝😻🩷",
    "embarrassed": "😅🙈😬",
    "surprised": "😮😲😦😧",
    "shocked": "😨😰🤯🙀",
    "thinking": "🧐💭",
    "cool": "🆒",
    "relaxed": "😇🧘",
    "delicious": "😋",
    "kissy": "😗😙😚💋",
    "confident": "💯",
    "sleepy": "😪🥱💤🌙",
    "silly": "😝😛🤪",
    "confused": "😕🤷😵🫤",
    "neutral": "😐😑🫥",
}

_EMOJI_EMOTIONS: Final[Mapping[str, str]] = {
    **{emoji: emotion for emotion, group in _SIMILAR_EMOJIS.items() for emoji in group},
    **{emoji: emotion for emotion, emoji in EMOTION_EMOJIS.items()},
}

# Presentation selectors and skin tones do not change the emotion.
_IGNORED: Final = frozenset({"\ufe0e", "\ufe0f", *map(chr, range(0x1F3FB, 0x1F400))})


def _emotion_of(emoji: str) -> str | None:
    plain = "".join(ch for ch in emoji if ch not in _IGNORED)
    if plain in _EMOJI_EMOTIONS:
        return _EMOJI_EMOTIONS[plain]
    # A ZWJ sequence ("🤷‍♂️") shows the emotion of its first emoji.
    return _EMOJI_EMOTIONS.get(plain[:1])


def emotion_for_emojis(emojis: Sequence[str]) -> str | None:
    """Return the firmware emotion for the emojis of a reply or segment.

    Args:
        emojis: Emojis in reply order, e.g. ``Segment.emojis``.

    Returns:
        The emotion of the first emoji that expresses one, or None when there
        is no emoji or none of them maps (the caller keeps the current face).
    """
    for emoji in emojis:
        if emotion := _emotion_of(emoji):
            return emotion
    return None


def emoji_for_emotion(emotion: str) -> str:
    """Return the emoji the firmware draws for ``emotion`` (neutral if unknown)."""
    return EMOTION_EMOJIS.get(emotion, EMOTION_EMOJIS[NEUTRAL])
