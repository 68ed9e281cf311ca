"""Demo mode: canned replies by keyword rules, no API key, no model.

``scripts/develop --demo`` runs ``python -m fake_provider --demo`` so that the
integration can be tried end to end with no account and no hardware. Nothing here
understands language, and it says so: the first reply of every conversation
announces that it is a demo. The server is the one the tests drive
(`fake_provider.server.FakeProvider`); what a test scripts, the demo decides:

* ``GET /models``: the demo chat model and the usual audio model names; any
  model id exists. Any API key, or none, is accepted.
* ``POST /chat/completions``: a canned reply picked by keyword rules on the last
  user message (English or Chinese), streamed as SSE with realistic timing (first
  token after about 250 ms, then about 30 tokens/s), or whole when not streamed.
  "Turn on / off the light" (打开 / 关闭 灯) becomes a call of Home Assistant's
  ``HassTurnOn`` / ``HassTurnOff`` tool (whatever namespace prefix the request gives
  its name, e.g. ``intent__HassTurnOn``) and, once the request carries the tool's
  result, a short confirmation. The weather, the time, a joke, greetings and
  thanks have short answers; anything else gets a friendly "I'm only a demo".
* ``POST /audio/transcriptions``: checks that the upload is a complete WAV file
  and answers what is said in it, if it is a phrase of the demo's vocabulary,
  else an empty transcript (`fake_provider.listener`, which lists the phrases).
* ``POST /audio/speech``: real speech from ``espeak-ng`` when it is installed, else
  a short melody as long as the text would take to say; 24 kHz mono 16-bit, as
  ``pcm`` or ``wav`` (and ``mp3``, ``opus``, ``aac``, ``flac`` when ``ffmpeg`` is
  installed), streamed in chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
import itertools
import json
import logging
import math
import re
import shutil
from typing import Any, Final

from .audio import (
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    SpeechSettings,
    Synthesizer,
    default_synthesizer,
)
from .chat import ChatReply, JsonDict
from .inputs import TranscriptionRequest
from .listener import Listener
from .text import Language, detect_language, tokenize

LOGGER: Final = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765

CHAT_MODEL: Final = "xiaozhi-demo"
STT_MODEL: Final = "whisper-1"
TTS_MODEL: Final = "tts-1"
# The chat model comes first: a new provider entry picks the first listed model.
MODELS: Final = (CHAT_MODEL, STT_MODEL, TTS_MODEL)

DEMO_LIGHT_NAME: Final = "Demo light"
TOOL_ARGUMENT_CHUNK: Final = 8
SPEECH_CHUNK_SECONDS: Final = 0.1

# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """How fast the demo answers, modelled on a typical cloud service.

    Attributes:
        ttft: Seconds before the first token of a chat reply.
        tokens_per_second: Pace of the tokens after the first.
        speech_first_byte: Seconds before the first chunk of speech audio.
        speech_speedup: Speech is streamed this many times faster than it plays.
    """

    ttft: float = 0.25
    tokens_per_second: float = 30.0
    speech_first_byte: float = 0.15
    speech_speedup: float = 4.0

    @classmethod
    def instant(cls) -> Timing:
        """Return a timing with no delays (for tests)."""
        return cls(0.0, math.inf, 0.0, math.inf)

    @property
    def token_interval(self) -> float:
        """Return the seconds between two tokens."""
        return 1 / self.tokens_per_second


# --------------------------------------------------------------------------
# Understanding the request (keyword rules, nothing more)
# --------------------------------------------------------------------------


class Topic(StrEnum):
    """What the last user message is about, as far as keyword rules can tell."""

    TURN_OFF = "turn_off"
    TURN_ON = "turn_on"
    WEATHER = "weather"
    TIME = "time"
    JOKE = "joke"
    THANKS = "thanks"
    GREETING = "greeting"
    OTHER = "other"


# First match wins: "off" before "on", greetings last ("hi, turn on the light").
_TOPIC_RULES: Final[tuple[tuple[Topic, re.Pattern[str]], ...]] = (
    (
        Topic.TURN_OFF,
        re.compile(
            r"\b(?:turn|switch|shut)\s+(?:\S+\s+){0,3}?off\b|\blights?\s+off\b"
            r"|关闭|关灯|关掉|关上|熄灭|把.{0,8}关",
            re.IGNORECASE,
        ),
    ),
    (
        Topic.TURN_ON,
        re.compile(
            r"\b(?:turn|switch)\s+(?:\S+\s+){0,3}?on\b|\blights?\s+on\b"
            r"|打开|开灯|开一下|开启|点亮|把.{0,8}开",
            re.IGNORECASE,
        ),
    ),
    (
        Topic.WEATHER,
        re.compile(r"weather|forecast|\brain|天气|下雨|气温", re.IGNORECASE),
    ),
    (
        Topic.TIME,
        re.compile(r"\btime\b|\bclock\b|几点|时间", re.IGNORECASE),
    ),
    (Topic.JOKE, re.compile(r"\bjoke|\bfunny\b|笑话|段子", re.IGNORECASE)),
    (Topic.THANKS, re.compile(r"\bthanks?\b|谢谢|多谢", re.IGNORECASE)),
    (
        Topic.GREETING,
        re.compile(
            r"^\W*(?:hi|hello|hey|good (?:morning|afternoon|evening))\b"
            r"|你好|您好|嗨|哈喽|早上好|晚上好",
            re.IGNORECASE,
        ),
    ),
)

INTENT_FOR_TOPIC: Final[Mapping[Topic, str]] = {
    Topic.TURN_ON: "HassTurnOn",
    Topic.TURN_OFF: "HassTurnOff",
}


def classify(text: str) -> Topic:
    """Return the topic of a user message."""
    for topic, pattern in _TOPIC_RULES:
        if pattern.search(text):
            return topic
    return Topic.OTHER


@dataclass(frozen=True, slots=True)
class HomeEntity:
    """An entity Home Assistant listed in the system prompt."""

    names: tuple[str, ...]
    domain: str

    @property
    def name(self) -> str:
        """Return the entity's main name."""
        return self.names[0]


DEMO_LIGHT: Final = HomeEntity((DEMO_LIGHT_NAME,), "light")

# The Assist API lists exposed entities as YAML: "- names: A, B\n  domain: light".
_ENTITY_ENTRY = re.compile(r"^- names: (?P<names>.+)\n\s+domain: (?P<domain>\w+)", re.M)


def exposed_entities(system_prompt: str) -> list[HomeEntity]:
    """Return the entities the system prompt lists, in order."""
    entities = []
    for match in _ENTITY_ENTRY.finditer(system_prompt):
        names = tuple(name.strip().strip("'\"") for name in match["names"].split(","))
        entities.append(HomeEntity(names, match["domain"]))
    return entities


def choose_target(entities: Sequence[HomeEntity], user_text: str) -> HomeEntity:
    """Return the entity the user named, else the first light, else the demo light."""
    spoken = user_text.casefold()
    for entity in entities:
        if any(name.casefold() in spoken for name in entity.names if name):
            return entity
    lights = [entity for entity in entities if entity.domain == "light"]
    return lights[0] if lights else DEMO_LIGHT


def find_tool(tools: Iterable[Mapping[str, Any]], intent: str) -> str | None:
    """Return the name of the request's tool for an intent, with any namespace."""
    for tool in tools:
        name = (tool.get("function") or {}).get("name")
        if isinstance(name, str) and (name == intent or name.endswith("__" + intent)):
            return name
    return None


def message_text(message: Mapping[str, Any]) -> str:
    """Return the text of a message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


# --------------------------------------------------------------------------
# Canned replies
# --------------------------------------------------------------------------

DEMO_NOTICE: Final[Mapping[Language, str]] = {
    "en": "This is the demo provider, with canned replies. ",
    "zh": "这里是演示模型，回复都是预设的。",
}

JOKES: Final[Mapping[Language, tuple[str, ...]]] = {
    "en": (
        "Why did the smart light break up with the switch? It felt turned off.",
        "I told my speaker a joke about Wi-Fi. It didn't get the connection.",
        "Why was the thermostat so calm? It knew how to keep its cool.",
    ),
    "zh": (
        "为什么灯泡总是很开心？因为它一直很亮。",
        "我给音箱讲了个笑话，它说：信号不好，没听懂。",
        "小智问空调：你怎么这么冷静？空调说：我天生就会制冷。",
    ),
}

CANNED: Final[Mapping[Language, Mapping[Topic, str]]] = {
    "en": {
        Topic.WEATHER: (
            "It's sunny and 23 degrees. Well, it would be: the demo has no "
            "weather service, so I made that up."
        ),
        Topic.TIME: "It's {time}.",
        Topic.THANKS: "You're welcome!",
        Topic.GREETING: (
            "Hello! I can switch the demo light on and off, tell you the time, "
            "or tell you a joke."
        ),
        Topic.OTHER: (
            "I'm only a demo, so I can't really answer that. Try asking me to "
            "turn the demo light on or off, what time it is, or for a joke."
        ),
    },
    "zh": {
        Topic.WEATHER: "今天晴，二十三度。不过演示模式没有天气服务，这是编的。",
        Topic.TIME: "现在是{time}。",
        Topic.THANKS: "不客气！",
        Topic.GREETING: "你好！我可以帮你开关演示灯、报时，或者讲个笑话。",
        Topic.OTHER: (
            "我只是个演示，回答不了这个问题。可以让我开灯、关灯、报时，或者讲个笑话。"
        ),
    },
}

SWITCHED: Final[Mapping[Language, Mapping[str, str]]] = {
    "en": {
        "HassTurnOn": "OK, the {name} is on.",
        "HassTurnOff": "OK, the {name} is off.",
    },
    "zh": {
        "HassTurnOn": "好的，{name}已经打开了。",
        "HassTurnOff": "好的，{name}已经关掉了。",
    },
}

TOOL_FAILED: Final[Mapping[Language, str]] = {
    "en": "Home Assistant couldn't do that: {reason}",
    "zh": "Home Assistant 没能做到：{reason}",
}

NO_HOME_ACCESS: Final[Mapping[Language, str]] = {
    "en": (
        "I would switch it, but this agent has no access to your home. "
        "Turn on Assist in the agent's options."
    ),
    "zh": "我想帮你开关，但这个助手没有控制家居的权限。请在助手选项里启用 Assist。",
}

TOOL_DONE: Final[Mapping[Language, str]] = {"en": "Done.", "zh": "好了。"}


@dataclass(frozen=True, slots=True)
class ToolCallPlan:
    """A tool call the demo makes."""

    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the demo answers to one chat request: text, or one tool call."""

    text: str = ""
    tool_call: ToolCallPlan | None = None


def plan_reply(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    variant: int = 0,
) -> Reply:
    """Return the canned reply to a chat request.

    Args:
        messages: The request's messages.
        tools: The request's tools.
        now: The time the demo tells when asked.
        variant: Picks among equivalent replies (jokes).
    """
    user_text = last_user_text(messages)
    language = detect_language(user_text)
    if messages and messages[-1].get("role") == "tool":
        text = confirm_tool_result(messages, language)
    else:
        topic = classify(user_text)
        if intent := INTENT_FOR_TOPIC.get(topic):
            if (tool := find_tool(tools, intent)) is not None:
                target = choose_target(
                    exposed_entities(system_text(messages)), user_text
                )
                return Reply(tool_call=ToolCallPlan(tool, tool_arguments(target)))
            text = NO_HOME_ACCESS[language]
        elif topic is Topic.JOKE:
            jokes = JOKES[language]
            text = jokes[variant % len(jokes)]
        else:
            text = CANNED[language][topic].format(time=f"{now:%H:%M}")
    if not any(m.get("role") == "assistant" and message_text(m) for m in messages):
        text = DEMO_NOTICE[language] + text
    return Reply(text=text)


def tool_arguments(target: HomeEntity) -> dict[str, Any]:
    """Return the intent tool's arguments that name an entity."""
    return {"name": target.name, "domain": [target.domain]}


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Return the text of the last user message, or an empty string."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def system_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Return the text of the system (or developer) messages."""
    return "\n".join(
        message_text(m) for m in messages if m.get("role") in ("system", "developer")
    )


def confirm_tool_result(
    messages: Sequence[Mapping[str, Any]], language: Language
) -> str:
    """Return the confirmation of the tool result that ends the messages."""
    result_message = messages[-1]
    call = find_tool_call(messages, result_message.get("tool_call_id"))
    outcome = parse_tool_result(message_text(result_message))
    if outcome.failure is not None:
        return TOOL_FAILED[language].format(reason=outcome.failure)
    if call is None:
        return TOOL_DONE[language]
    intent = call.name.rpartition("__")[2]
    template = SWITCHED[language].get(intent)
    if template is None:
        return TOOL_DONE[language]
    name = outcome.names[0] if outcome.names else call.arguments.get("name")
    return template.format(name=name or DEMO_LIGHT_NAME)


def find_tool_call(
    messages: Sequence[Mapping[str, Any]], call_id: object
) -> ToolCallPlan | None:
    """Return the assistant's tool call with this id, if the messages have it."""
    for message in messages:
        for call in message.get("tool_calls") or ():
            if call.get("id") != call_id:
                continue
            function = call.get("function") or {}
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            if not isinstance(arguments, dict):
                arguments = {}
            return ToolCallPlan(str(function.get("name", "")), arguments)
    return None


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What a tool result says: the entities it acted on, or why it failed."""

    names: tuple[str, ...] = ()
    failure: str | None = None


def parse_tool_result(content: str) -> ToolOutcome:
    """Read a Home Assistant tool result as the integration sends it.

    The content is ``{"data": <result>, "error": <bool>}``; an intent's result
    lists the entities it acted on under ``data.success``, a failed call carries
    ``error`` (and ``error_text``), a failed intent has ``response_type: error``.
    """
    try:
        payload = json.loads(content)
    except ValueError:
        return ToolOutcome()
    if not isinstance(payload, dict):
        return ToolOutcome()
    data = payload.get("data", payload)
    if not isinstance(data, dict):
        data = {}
    failed = payload.get("error") is True or data.get("response_type") == "error"
    if failed or "error" in data:
        return ToolOutcome(failure=failure_reason(data))
    targets = (data.get("data") or {}).get("success") or []
    names = tuple(
        str(target["name"])
        for target in targets
        if isinstance(target, dict) and target.get("name")
    )
    return ToolOutcome(names=names)


def failure_reason(data: Mapping[str, Any]) -> str:
    """Return the human-readable reason of a failed tool call."""
    speech = ((data.get("speech") or {}).get("plain") or {}).get("speech")
    for reason in (data.get("error_text"), data.get("error"), speech):
        if isinstance(reason, str) and reason:
            return reason
    code = (data.get("data") or {}).get("code")
    return str(code or "unknown error")


INDEX_TEXT: Final = (
    "Xiaozhi DEMO provider: an OpenAI-compatible API at /v1 with canned replies.\n"
    "It has no language model, and hears only the phrases of its vocabulary.\n"
    "See fake_provider/demo.py and fake_provider/listener.py.\n"
)


@dataclass(slots=True)
class DemoMode:
    """What the demo answers where a test would have scripted the answer.

    Attributes:
        timing: Delays that make replies feel like a real service.
        synthesizer: What speaks for ``/v1/audio/speech``.
        ffmpeg: ffmpeg executable for compressed speech formats, if any.
        listener: What hears the uploads (espeak-ng's voices, a closed vocabulary).
    """

    timing: Timing = field(default_factory=Timing)
    synthesizer: Synthesizer = field(default_factory=default_synthesizer)
    ffmpeg: str | None = field(default_factory=lambda: shutil.which("ffmpeg"))
    listener: Listener = field(
        default_factory=lambda: Listener(shutil.which("espeak-ng"))
    )
    _call_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _chat_turns: itertools.count[int] = field(default_factory=itertools.count)

    def speech_settings(self) -> SpeechSettings:
        """Return the pacing of speech audio: 0.1 s chunks, faster than real time."""
        chunk = round(SPEECH_CHUNK_SECONDS * SAMPLE_RATE) * SAMPLE_WIDTH
        rate = SAMPLE_RATE * SAMPLE_WIDTH * self.timing.speech_speedup
        return SpeechSettings(
            first_byte_delay=self.timing.speech_first_byte,
            chunk_size=chunk,
            bytes_per_second=None if math.isinf(rate) else rate,
        )

    def chat_reply(self, body: JsonDict, *, now: datetime) -> ChatReply:
        """Return the canned reply to a chat request, paced like a cloud model."""
        reply = plan_reply(
            body["messages"],
            body.get("tools") or [],
            now=now,
            variant=next(self._chat_turns),
        )
        return chat_reply(reply, f"call-demo{next(self._call_ids)}", self.timing)

    async def transcript(self, upload: TranscriptionRequest) -> str:
        """Return what is said in an upload, or ``""`` for nothing the demo knows."""
        wav = upload.wav
        heard = await self.listener.hear(
            upload.pcm, wav.sample_rate, wav.channels, wav.sample_width
        )
        LOGGER.info(
            "Heard %r (nearest phrase %r at distance %.1f, accepted under %.1f)",
            heard.text,
            heard.nearest,
            heard.distance,
            self.listener.threshold,
        )
        return heard.text


def chat_reply(reply: Reply, call_id: str, timing: Timing) -> ChatReply:
    """Return the scripted form of a demo reply: its tokens, or its tool call."""
    if reply.tool_call is None:
        return ChatReply.text(
            tokenize(reply.text), ttft=timing.ttft, token_delay=timing.token_interval
        )
    return ChatReply.tool_call(
        reply.tool_call.name,
        dict(reply.tool_call.arguments),
        call_id=call_id,
        chunk=TOOL_ARGUMENT_CHUNK,
        ttft=timing.ttft,
        token_delay=timing.token_interval,
    )
