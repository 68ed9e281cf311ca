"""Text the device shows or speaks, in the device's own language.

Home Assistant's translations serve its UI; a device speaks in the language its
firmware was built for (its Accept-Language header), whatever HA's UI language is.
"""

from typing import Final

DEFAULT_LANGUAGE: Final = "en"

MESSAGES: Final[dict[str, dict[str, str]]] = {
    "activation": {
        "en": "Open Home Assistant and enter this code to pair me",
        "zh": "请在 Home Assistant 中输入验证码完成配对",
        "ja": "Home Assistant でこのコードを入力してペアリングしてください",
    },
    "pairing_busy": {
        "en": "Home Assistant is busy pairing other devices, please try again later",
        "zh": "Home Assistant 正在配对其他设备，请稍后再试",
        "ja": "Home Assistant は他のデバイスとペアリング中です。後でもう一度お試しください",
    },
    "error_stt": {
        "en": "Sorry, I could not understand that.",
        "zh": "抱歉，我没听清楚。",
        "ja": "すみません、聞き取れませんでした。",
    },
    "error_agent": {
        "en": "Sorry, I cannot answer right now.",
        "zh": "抱歉，我现在无法回答。",
        "ja": "すみません、今はお答えできません。",
    },
    "error_tts": {
        "en": "Sorry, I cannot speak right now.",
        "zh": "抱歉，我现在无法说话。",
        "ja": "すみません、今は話せません。",
    },
    "pipeline_cannot_talk": {
        "en": "I cannot hear or speak yet: choose a voice assistant with speech-to-text and text-to-speech for me in Home Assistant",
        "zh": "我还不能听和说：请在 Home Assistant 中为我选择带语音识别和语音合成的语音助手",
        "ja": "まだ聞くことも話すこともできません。Home Assistant で音声認識と音声合成のある音声アシスタントを選んでください",
    },
    "error_title": {
        "en": "Error",
        "zh": "错误",
        "ja": "エラー",
    },
    # Shown when HA's satellite wizard tests an idle, always-connected device.
    "connection_test": {
        "en": "Connected to Home Assistant",
        "zh": "已连接到 Home Assistant",
        "ja": "Home Assistant に接続しました",
    },
    # The title of an alert that shows an announcement or a notification.
    "announcement_title": {
        "en": "Announcement",
        "zh": "通知",
        "ja": "お知らせ",
    },
    # Timers: {timer} is its name, or its length in the duration_* words.
    "timer_title": {
        "en": "Timer",
        "zh": "计时器",
        "ja": "タイマー",
    },
    "timer_finished": {
        "en": "Your {timer} timer is done.",
        "zh": "{timer}计时器时间到了。",
        "ja": "{timer}のタイマーが終了しました。",
    },
    "timer_rings_at": {
        "en": "Timer {timer} · rings at {time}",
        "zh": "计时器 {timer} · {time} 响",
        "ja": "タイマー {timer} · {time} に鳴ります",
    },
    "timer_paused": {
        "en": "Timer {timer} · paused, {left} left",
        "zh": "计时器 {timer} · 已暂停，剩 {left}",
        "ja": "タイマー {timer} · 一時停止中、残り {left}",
    },
    "duration_hours": {"en": "{n} hour", "zh": "{n}小时", "ja": "{n}時間"},
    "duration_minutes": {"en": "{n} minute", "zh": "{n}分钟", "ja": "{n}分"},
    "duration_seconds": {"en": "{n} second", "zh": "{n}秒", "ja": "{n}秒"},
}


def language_family(language: str | None) -> str:
    """Return the base language of a tag like zh-CN, zh_TW or en-US."""
    if not language:
        return DEFAULT_LANGUAGE
    return language.replace("_", "-").split("-")[0].strip().lower() or DEFAULT_LANGUAGE


def device_message(key: str, language: str | None) -> str:
    """Return a message in the device's language, English when we lack it."""
    texts = MESSAGES[key]
    return texts.get(language_family(language), texts[DEFAULT_LANGUAGE])
