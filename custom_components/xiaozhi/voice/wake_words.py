"""Whether a device's ``listen detect`` is its wake word or a typed request.

The firmware sends ``{"type": "listen", "state": "detect", "text": <wake word>}``
after its wake word (application.cc ``ContinueWakeWordInvoke``, only with
``CONFIG_SEND_WAKE_WORD_DATA``), and right before it the wake word's own audio
(the ``PopWakeWordPacket`` loop: up to the whole cached utterance). Its text is
the wake word's name (esp-sr's ``get_word_name``, or the custom wake word's
``CONFIG_CUSTOM_WAKE_WORD_DISPLAY``), which any firmware build may choose; the
hello says nothing of it.

Other clients send the same message with what their user typed (xiaozhi-sdk
``send_text``, py-xiaozhi's text box, xiaozhi-client ``send_txt_message``), with
no audio before it; the reference server answers such a text as a chat unless
it is one of its configured wake words.

So a detect is a wake word when audio of a wake word came with it, or when its
text is a known wake word (the reference server's defaults and esp-sr's wake
word names, compared without case, spaces or punctuation); anything else is a
typed request. An empty text is a wake word (there is nothing to answer).
"""

from typing import Final
import unicodedata

# Audio that was sent, outside a listening turn, before the detect: at least
# this much is the wake word's (four 60 ms frames), not a frame or two still in
# flight after a ``listen stop``.
WAKE_WORD_AUDIO_BYTES: Final = 16000 * 2 * 240 // 1000


def normalized(text: str) -> str:
    """Return ``text`` without case, spaces, punctuation or symbols."""
    return "".join(
        char
        for char in unicodedata.normalize("NFKC", text).casefold()
        if unicodedata.category(char)[0] not in "PZSC"
    )


KNOWN_WAKE_WORDS: Final = frozenset(
    normalized(word)
    for word in (
        # xiaozhi-esp32-server config.yaml wakeup_words.
        *("你好小智", "嘿你好呀", "你好小志", "小爱同学", "你好小鑫", "你好小新"),
        *("小美同学", "小龙小龙", "喵喵同学", "小滨小滨", "小冰小冰"),
        # The firmware's custom wake word default (Kconfig CUSTOM_WAKE_WORD_DISPLAY).
        "小土豆",
        "xiaotudou",
        # esp-sr WakeNet models' word names.
        *("Hi,ESP", "Hi,Lexin", "nihaoxiaozhi", "xiaoaitongxue", "Alexa"),
        *("Hi,Jason", "nihaomiaoban", "xiaomeitongxue"),
    )
)


def is_wake_word(text: str, *, audio_bytes: int) -> bool:
    """Return whether a detect with ``text`` is a wake word (else a typed request).

    Args:
        text: The detect's text.
        audio_bytes: 16 kHz PCM the device sent just before it, outside a
            listening turn (the wake word's audio, from the firmware).
    """
    word = normalized(text)
    return not word or audio_bytes >= WAKE_WORD_AUDIO_BYTES or word in KNOWN_WAKE_WORDS
