"""A local OpenAI-compatible DEMO provider: canned replies, no API key, no model.

``scripts/develop --demo`` runs it so that the integration can be tried end to end
with no account and no hardware. Nothing here understands speech or language, and
it says so: the first reply of every conversation announces that it is a demo.

Endpoints, all under ``/v1``; any API key, or none, is accepted:

* ``GET /models``: the demo chat model and the usual audio model names.
* ``POST /chat/completions``: a canned reply picked by keyword rules on the last
  user message (English or Chinese), streamed as SSE with realistic timing (first
  token after about 250 ms, then about 30 tokens/s), or whole when not streamed.
  "Turn on / off the light" (打开 / 关闭 灯) becomes a call of Home Assistant's
  ``HassTurnOn`` / ``HassTurnOff`` tool (whatever namespace prefix the request gives
  its name, e.g. ``intent__HassTurnOn``) and, once the request carries the tool's
  result, a short confirmation. The weather, the time, a joke, greetings and
  thanks have short answers; anything else gets a friendly "I'm only a demo".
* ``POST /audio/transcriptions``: checks that the upload is a WAV file and answers
  a transcript *without listening to it*: the next text queued with
  ``POST /demo/transcripts`` (body ``{"text": "..."}``), else the next of a few
  demo utterances in the request's language, in turn.
* ``POST /audio/speech``: real speech from ``espeak-ng`` when it is installed, else
  a short melody as long as the text would take to say; 24 kHz mono 16-bit, as
  ``pcm`` or ``wav`` (and ``mp3``, ``opus``, ``aac``, ``flac`` when ``ffmpeg`` is
  installed), streamed in chunks.

Run it with ``python -m fake_provider --demo [--host 127.0.0.1] [--port 8765]``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
import functools
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import struct
import time
from typing import Any, Final, Literal, Protocol

from aiohttp import BodyPartReader, web
import audioop

LOGGER: Final = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
API_PREFIX: Final = "/v1"

CHAT_MODEL: Final = "xiaozhi-demo"
STT_MODEL: Final = "whisper-1"
TTS_MODEL: Final = "tts-1"
# The chat model comes first: a new provider entry picks the first listed model.
MODELS: Final = (CHAT_MODEL, STT_MODEL, TTS_MODEL)

DEMO_LIGHT_NAME: Final = "Demo light"

SAMPLE_RATE: Final = 24000
SAMPLE_WIDTH: Final = 2
CHUNK_SECONDS: Final = 0.1
MAX_SPEECH_INPUT: Final = 4096
STREAMING_WAV_SIZE: Final = 0xFFFFFFFF  # OpenAI's streamed WAV header: size unknown
# What an encoder needs from ffmpeg for each compressed response_format.
FFMPEG_FORMATS: Final[Mapping[str, tuple[str, ...]]] = {
    "mp3": ("-f", "mp3"),
    "opus": ("-c:a", "libopus", "-f", "ogg"),
    "aac": ("-c:a", "aac", "-f", "adts"),
    "flac": ("-f", "flac"),
}
CONTENT_TYPES: Final[Mapping[str, str]] = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}

type Language = Literal["en", "zh"]
type JsonDict = dict[str, Any]


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

    def chunk_interval(self, seconds_of_audio: float) -> float:
        """Return the seconds to wait after sending a chunk of audio."""
        return seconds_of_audio / self.speech_speedup


# --------------------------------------------------------------------------
# Understanding the request (keyword rules, nothing more)
# --------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_TOKEN = re.compile(r"\s*(?:[A-Za-z0-9'’]+|\S)")


def detect_language(text: str) -> Language:
    """Return ``zh`` when the text has Chinese characters, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


def tokenize(text: str) -> list[str]:
    """Split text into the pieces a model would stream: words, CJK characters, marks.

    Each piece keeps the whitespace before it, so joining them gives the text back
    (minus trailing whitespace).
    """
    return _TOKEN.findall(text)


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


# --------------------------------------------------------------------------
# OpenAI wire format
# --------------------------------------------------------------------------


def sse(payload: JsonDict | str) -> bytes:
    """Encode one server-sent event, compact like OpenAI's."""
    if isinstance(payload, str):
        return f"data: {payload}\n\n".encode()
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def reply_deltas(reply: Reply, call_id: str, chunk: int = 8) -> list[JsonDict]:
    """Return the streamed deltas of a reply; the first carries the role."""
    if reply.tool_call is None:
        head: JsonDict = {"role": "assistant", "content": ""}
        return [head] + [{"content": token} for token in tokenize(reply.text)]
    arguments = json.dumps(reply.tool_call.arguments, ensure_ascii=False)
    head_call = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": reply.tool_call.name, "arguments": ""},
    }
    deltas: list[JsonDict] = [
        {"role": "assistant", "content": None, "tool_calls": [head_call]}
    ]
    for start in range(0, len(arguments), chunk):
        piece = arguments[start : start + chunk]
        deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    return deltas


def finish_reason(reply: Reply) -> str:
    """Return the finish reason of a reply."""
    return "stop" if reply.tool_call is None else "tool_calls"


def completion_tokens(reply: Reply) -> int:
    """Return roughly how many tokens a reply costs."""
    if reply.tool_call is None:
        return len(tokenize(reply.text))
    return 1 + len(json.dumps(reply.tool_call.arguments)) // 4


def usage_json(messages: Sequence[Mapping[str, Any]], reply: Reply) -> JsonDict:
    """Return a plausible ``usage`` object (four characters a token)."""
    prompt = sum(len(message_text(m)) for m in messages) // 4 + 1
    completion = completion_tokens(reply)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_json(
    reply: Reply, completion_id: str, call_id: str, model: str, usage: JsonDict
) -> JsonDict:
    """Return the non-streamed ``chat.completion`` of a reply."""
    message: JsonDict = {"role": "assistant", "content": reply.text or None}
    if reply.tool_call is not None:
        message["tool_calls"] = [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": reply.tool_call.name,
                    "arguments": json.dumps(
                        reply.tool_call.arguments, ensure_ascii=False
                    ),
                },
            }
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason(reply)}
        ],
        "usage": usage,
    }


def error_response(
    status: int, message: str, *, param: str | None = None
) -> web.Response:
    """Return an OpenAI-style error."""
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }
    return web.json_response({"error": error}, status=status)


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------


class SynthesisError(RuntimeError):
    """The speech synthesizer failed."""


class Synthesizer(Protocol):
    """Turns text into 24 kHz mono 16-bit PCM."""

    @property
    def label(self) -> str:
        """Return what the synthesizer is, for logs."""
        ...

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Return the PCM of ``text`` spoken with ``voice`` at ``speed``."""
        ...


def wav_pcm(data: bytes) -> tuple[int, int, bytes]:
    """Return the sample rate, channels and PCM of a 16-bit WAV.

    Tolerates the bogus sizes of a WAV written to a pipe (as ``espeak-ng
    --stdout`` does): the data chunk runs to the end of the file.

    Raises:
        ValueError: Not a 16-bit PCM RIFF/WAVE file.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    position = 12
    rate = channels = 0
    while position + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, position)
        body = position + 8
        if chunk_id == b"data":
            if not rate:
                break
            end = min(body + size, len(data))
            return rate, channels, data[body:end]
        if chunk_id == b"fmt " and size >= 16:
            audio_format, channels, rate, _, _, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            if audio_format != 1 or bits != 16:
                raise ValueError("not 16-bit PCM")
        position = body + size + (size & 1)
    raise ValueError("no fmt or data chunk")


def to_mono_24k(pcm: bytes, rate: int, channels: int) -> bytes:
    """Return 16-bit PCM as mono at ``SAMPLE_RATE``."""
    pcm = pcm[: len(pcm) - len(pcm) % (SAMPLE_WIDTH * channels)]
    if channels == 2:
        pcm = audioop.tomono(pcm, SAMPLE_WIDTH, 0.5, 0.5)
    if rate != SAMPLE_RATE:
        pcm, _ = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, rate, SAMPLE_RATE, None)
    return pcm


def streaming_wav_header() -> bytes:
    """Return the 44-byte header OpenAI streams before WAV audio (sizes unknown)."""
    byte_rate = SAMPLE_RATE * SAMPLE_WIDTH
    return (
        struct.pack("<4sI4s", b"RIFF", STREAMING_WAV_SIZE, b"WAVE")
        + struct.pack(
            "<4sIHHIIHH", b"fmt ", 16, 1, 1, SAMPLE_RATE, byte_rate, SAMPLE_WIDTH, 16
        )
        + struct.pack("<4sI", b"data", STREAMING_WAV_SIZE)
    )


# Voices that OpenAI describes as female get espeak's female variant.
FEMALE_VOICES: Final = frozenset({"coral", "nova", "sage", "shimmer", "ballad"})
ESPEAK_BASE_WPM: Final = 175


class EspeakSynthesizer:
    """Real (robotic) speech from the ``espeak-ng`` program."""

    label = "espeak-ng"

    def __init__(self, command: str) -> None:
        """Use the ``espeak-ng`` executable at ``command``."""
        self.command = command

    @staticmethod
    def voice_for(text: str, voice: str) -> str:
        """Return the espeak voice: Mandarin or English, female variant if asked."""
        base = "cmn" if detect_language(text) == "zh" else "en-us"
        return base + ("+f3" if voice in FEMALE_VOICES else "")

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Run espeak-ng without blocking the event loop; return 24 kHz PCM."""
        words_per_minute = round(min(max(ESPEAK_BASE_WPM * speed, 80), 450))
        process = await asyncio.create_subprocess_exec(
            self.command,
            "--stdout",
            "--stdin",
            "-b",
            "1",
            "-v",
            self.voice_for(text, voice),
            "-s",
            str(words_per_minute),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        wav, errors = await process.communicate(text.encode())
        if process.returncode != 0:
            raise SynthesisError(errors.decode(errors="replace").strip())
        try:
            rate, channels, pcm = wav_pcm(wav)
        except ValueError as err:
            raise SynthesisError(f"espeak-ng wrote no usable WAV: {err}") from err
        return to_mono_24k(pcm, rate, channels)


# A pentatonic scale: any sequence of its notes sounds pleasant.
MELODY_HZ: Final = (523.25, 587.33, 659.25, 783.99, 880.0)
NOTE_SECONDS: Final = 0.16
GAP_SECONDS: Final = 0.04
PAUSE_SECONDS: Final = 0.2
MELODY_AMPLITUDE: Final = 0.18 * 32767
FADE_SECONDS: Final = 0.02


def melody_pcm(text: str, speed: float = 1.0) -> bytes:
    """Return a soft melody with one note per word (or CJK character) of ``text``.

    Punctuation makes a pause, so the melody follows the rhythm of the text.
    """
    parts: list[bytes] = []
    notes = 0
    for token in tokenize(text):
        if any(character.isalnum() for character in token):
            frequency = MELODY_HZ[(notes * 3 + len(token)) % len(MELODY_HZ)]
            parts.append(note_pcm(frequency, NOTE_SECONDS / speed))
            parts.append(silence_pcm(GAP_SECONDS / speed))
            notes += 1
        else:
            parts.append(silence_pcm(PAUSE_SECONDS / speed))
    return b"".join(parts) or silence_pcm(PAUSE_SECONDS)


@functools.lru_cache(maxsize=256)
def note_pcm(frequency: float, seconds: float) -> bytes:
    """Return a sine note with short fades, so it does not click.

    Cached: a melody reuses a handful of notes, so making one costs next to nothing
    and needs no thread.
    """
    count = max(1, round(seconds * SAMPLE_RATE))
    fade = max(1, min(round(FADE_SECONDS * SAMPLE_RATE), count // 2))
    step = 2 * math.pi * frequency / SAMPLE_RATE
    samples = [
        round(
            MELODY_AMPLITUDE
            * math.sin(step * n)
            * min(1.0, n / fade, (count - 1 - n) / fade)
        )
        for n in range(count)
    ]
    return struct.pack(f"<{count}h", *samples)


def silence_pcm(seconds: float) -> bytes:
    """Return silence."""
    return bytes(SAMPLE_WIDTH * round(seconds * SAMPLE_RATE))


class MelodySynthesizer:
    """Stands in for speech when ``espeak-ng`` is not installed."""

    label = "melody (espeak-ng is not installed)"

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Return the melody of ``text``."""
        return melody_pcm(text, speed)


def default_synthesizer() -> Synthesizer:
    """Return espeak-ng when it is on ``PATH``, else the melody."""
    if command := shutil.which("espeak-ng"):
        return EspeakSynthesizer(command)
    return MelodySynthesizer()


async def encode_with_ffmpeg(pcm: bytes, response_format: str, ffmpeg: str) -> bytes:
    """Encode 24 kHz mono PCM into a compressed format with ffmpeg.

    Raises:
        SynthesisError: ffmpeg failed.
    """
    process = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "s16le",
        "-ar",
        str(SAMPLE_RATE),
        "-ac",
        "1",
        "-i",
        "pipe:0",
        *FFMPEG_FORMATS[response_format],
        "pipe:1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    encoded, errors = await process.communicate(pcm)
    if process.returncode != 0:
        raise SynthesisError(errors.decode(errors="replace").strip())
    return encoded


# --------------------------------------------------------------------------
# Transcripts (there is no speech recognition)
# --------------------------------------------------------------------------

DEMO_UTTERANCES: Final[Mapping[Language, tuple[str, ...]]] = {
    "en": (
        "Turn on the demo light.",
        "What's the weather like today?",
        "Tell me a joke.",
        "Turn off the demo light.",
    ),
    "zh": ("打开演示灯", "今天天气怎么样？", "讲个笑话", "关掉演示灯"),
}


@dataclass(slots=True)
class TranscriptSource:
    """Where transcripts come from, since nothing listens to the audio.

    Texts queued (by a simulator, or a person with curl) come first, in order;
    after them the demo utterances of the request's language take turns.
    """

    queued: deque[str] = field(default_factory=deque)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def next_text(self, language: str | None) -> str:
        """Return the transcript of the next upload."""
        if self.queued:
            return self.queued.popleft()
        code: Language = "zh" if (language or "").lower().startswith("zh") else "en"
        utterances = DEMO_UTTERANCES[code]
        return utterances[next(self._turn) % len(utterances)]


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------

INDEX_TEXT: Final = (
    "Xiaozhi DEMO provider: an OpenAI-compatible API at /v1 with canned replies.\n"
    "It has no language model and no speech recognition. See fake_provider/demo.py.\n"
)


class DemoProvider:
    """The demo's HTTP application; see the module docstring.

    Attributes:
        timing: Delays that make replies feel like a real service.
        synthesizer: What speaks for ``/v1/audio/speech``.
        transcripts: Where transcripts come from.
        ffmpeg: ffmpeg executable for compressed speech formats, if any.
        streams_closed_early: Replies the client stopped reading (barge-in).
    """

    def __init__(
        self,
        *,
        timing: Timing | None = None,
        synthesizer: Synthesizer | None = None,
        ffmpeg: str | None = None,
    ) -> None:
        """Create the provider; by default with realistic timing and espeak-ng."""
        self.timing = timing or Timing()
        self.synthesizer = synthesizer or default_synthesizer()
        self.ffmpeg = ffmpeg if ffmpeg is not None else shutil.which("ffmpeg")
        self.transcripts = TranscriptSource()
        self._ids = itertools.count(1)
        self._chat_turns = itertools.count()
        self.streams_closed_early = 0

    def application(self) -> web.Application:
        """Return the aiohttp application serving the demo API."""
        app = web.Application()
        app.router.add_get("/", self._handle_index)
        app.router.add_get(f"{API_PREFIX}/models", self._handle_models)
        app.router.add_get(f"{API_PREFIX}/models/{{model}}", self._handle_model)
        app.router.add_post(f"{API_PREFIX}/chat/completions", self._handle_chat)
        app.router.add_post(
            f"{API_PREFIX}/audio/transcriptions", self._handle_transcription
        )
        app.router.add_post(f"{API_PREFIX}/audio/speech", self._handle_speech)
        app.router.add_post("/demo/transcripts", self._handle_queue_transcript)
        return app

    @contextlib.contextmanager
    def _client_may_leave(self) -> Iterator[None]:
        """Take a client closing a stream early as normal: barge-in does it."""
        try:
            yield
        except ConnectionResetError:
            self.streams_closed_early += 1
            LOGGER.debug("The client closed a stream early")

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-demo{next(self._ids)}"

    async def _handle_index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=INDEX_TEXT)

    # -- models ------------------------------------------------------------

    @staticmethod
    def _model_json(model: str) -> JsonDict:
        return {"id": model, "object": "model", "created": 0, "owned_by": "demo"}

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        models = [self._model_json(model) for model in MODELS]
        return web.json_response({"object": "list", "data": models})

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._model_json(request.match_info["model"]))

    # -- chat --------------------------------------------------------------

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error_response(400, "'messages' must be a non-empty list.")
        tools = body.get("tools") or []
        reply = plan_reply(
            messages,
            tools,
            now=datetime.now().astimezone(),
            variant=next(self._chat_turns),
        )
        model = str(body.get("model") or CHAT_MODEL)
        call_id = self._next_id("call")
        usage = usage_json(messages, reply)
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return await self._stream_chat(
                request,
                reply,
                model,
                call_id,
                usage if options.get("include_usage") else None,
            )
        await asyncio.sleep(
            self.timing.ttft + self.timing.token_interval * completion_tokens(reply)
        )
        return web.json_response(
            completion_json(reply, self._next_id("chatcmpl"), call_id, model, usage)
        )

    async def _stream_chat(
        self,
        request: web.Request,
        reply: Reply,
        model: str,
        call_id: str,
        usage: JsonDict | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        completion_id = self._next_id("chatcmpl")
        created = int(time.time())

        def chunk(choices: list[JsonDict], **extra: Any) -> JsonDict:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }

        with self._client_may_leave():
            await asyncio.sleep(self.timing.ttft)
            for position, delta in enumerate(reply_deltas(reply, call_id)):
                if position > 1:
                    await asyncio.sleep(self.timing.token_interval)
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                await response.write(sse(chunk([choice])))
            finish = {"index": 0, "delta": {}, "finish_reason": finish_reason(reply)}
            await response.write(sse(chunk([finish])))
            if usage is not None:
                await response.write(sse(chunk([], usage=usage)))
            await response.write(sse("[DONE]"))
            await response.write_eof()
        return response

    # -- transcription -----------------------------------------------------

    async def _handle_queue_transcript(
        self, request: web.Request
    ) -> web.StreamResponse:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            return error_response(400, "'text' must be a non-empty string.")
        self.transcripts.queued.append(text.strip())
        return web.json_response({"queued": len(self.transcripts.queued)})

    async def _handle_transcription(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "multipart/form-data":
            return error_response(400, "Expected a multipart/form-data body.")
        form, audio = await read_multipart(request)
        if audio is None:
            return error_response(400, "'file' is required.", param="file")
        if audio[:4] != b"RIFF" or audio[8:12] != b"WAVE":
            return error_response(400, "The demo only accepts WAV files.", param="file")
        response_format = form.get("response_format", "json")
        if response_format not in ("json", "text"):
            return error_response(
                400,
                f"response_format '{response_format}' is not supported by the demo.",
                param="response_format",
            )
        text = self.transcripts.next_text(form.get("language"))
        LOGGER.info("Transcript (canned, the audio is not listened to): %s", text)
        if form.get("stream", "false").lower() == "true":
            return await self._stream_transcript(request, text)
        if response_format == "text":
            return web.Response(text=text)
        return web.json_response({"text": text})

    async def _stream_transcript(
        self, request: web.Request, text: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        await response.prepare(request)
        for token in tokenize(text):
            await response.write(sse({"type": "transcript.text.delta", "delta": token}))
        await response.write(sse({"type": "transcript.text.done", "text": text}))
        await response.write_eof()
        return response

    # -- speech ------------------------------------------------------------

    async def _handle_speech(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        speech = parse_speech_request(body, ffmpeg_available=self.ffmpeg is not None)
        if isinstance(speech, web.Response):
            return speech
        started = time.monotonic()
        try:
            pcm = await self.synthesizer.synthesize(
                speech.text, speech.voice, speech.speed
            )
            audio = await self._encode(pcm, speech.response_format)
        except SynthesisError as err:
            LOGGER.warning("Speech synthesis failed: %s", err)
            return error_response(500, f"Speech synthesis failed: {err}")
        await asyncio.sleep(
            max(0.0, self.timing.speech_first_byte - (time.monotonic() - started))
        )
        return await self._stream_audio(request, audio, speech.response_format)

    async def _encode(self, pcm: bytes, response_format: str) -> bytes:
        if response_format == "pcm":
            return pcm
        if response_format == "wav":
            return streaming_wav_header() + pcm
        assert self.ffmpeg is not None  # parse_speech_request checked it
        return await encode_with_ffmpeg(pcm, response_format, self.ffmpeg)

    async def _stream_audio(
        self, request: web.Request, audio: bytes, response_format: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": CONTENT_TYPES[response_format]}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        size = round(CHUNK_SECONDS * SAMPLE_RATE) * SAMPLE_WIDTH
        with self._client_may_leave():
            for start in range(0, len(audio), size):
                await response.write(audio[start : start + size])
                await asyncio.sleep(self.timing.chunk_interval(CHUNK_SECONDS))
            await response.write_eof()
        return response


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """The fields of a speech request the demo uses."""

    text: str
    voice: str
    response_format: str
    speed: float


def parse_speech_request(
    body: Mapping[str, Any], *, ffmpeg_available: bool
) -> SpeechRequest | web.Response:
    """Validate a speech request like OpenAI does (400 on errors)."""
    text = body.get("input")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_SPEECH_INPUT:
        return error_response(400, "'input' must be 1..4096 characters.", param="input")
    voice = body.get("voice")
    if isinstance(voice, dict):  # {"id": "..."}: a custom voice
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        return error_response(400, "'voice' is required.", param="voice")
    response_format = body.get("response_format", "mp3")
    supported = ["pcm", "wav"] + (list(FFMPEG_FORMATS) if ffmpeg_available else [])
    if response_format not in supported:
        return error_response(
            400,
            f"response_format '{response_format}' is not supported here; "
            f"use one of {', '.join(supported)}.",
            param="response_format",
        )
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return error_response(400, "'speed' must be within 0.25..4.0.", param="speed")
    return SpeechRequest(text, voice, response_format, float(speed))


async def read_json(request: web.Request) -> JsonDict | web.Response:
    """Return the request's JSON object, or a 400 response."""
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "We could not parse the JSON body.")
    if not isinstance(body, dict):
        return error_response(400, "The body must be a JSON object.")
    return body


async def read_multipart(request: web.Request) -> tuple[dict[str, str], bytes | None]:
    """Return the form fields and the uploaded ``file`` of a multipart body."""
    form: dict[str, str] = {}
    audio: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "file":
            audio = bytes(await part.read())
        else:
            form[part.name] = await part.text()
    return form, audio


@contextlib.asynccontextmanager
async def serve(
    provider: DemoProvider, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> AsyncIterator[str]:
    """Serve the provider; yield its base URL (``http://host:port/v1``).

    Port 0 picks a free port.
    """
    runner = web.AppRunner(provider.application(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{host}:{bound_port}{API_PREFIX}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


async def _exit_with_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once the process ``parent_pid`` is gone."""
    while True:
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            stop.set()
            return
        except PermissionError:
            pass  # alive, owned by someone else
        await asyncio.sleep(1)


async def run(host: str, port: int, parent_pid: int | None) -> None:
    """Serve until SIGINT/SIGTERM (or until ``parent_pid`` exits)."""
    provider = DemoProvider()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(provider, host, port) as base_url:
        LOGGER.info(
            "Xiaozhi DEMO provider on %s: canned replies, speech by %s",
            base_url,
            provider.synthesizer.label,
        )
        watcher = (
            asyncio.create_task(_exit_with_parent(parent_pid, stop))
            if parent_pid
            else None
        )
        await stop.wait()
        if watcher is not None:
            watcher.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the demo provider from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--demo", action="store_true", required=True, help="serve the demo provider"
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--parent-pid", type=int, help="exit when this process exits")
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s demo-provider: %(message)s", level=logging.INFO
    )
    asyncio.run(run(args.host, args.port, args.parent_pid))
