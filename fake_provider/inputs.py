"""What clients send: the records a test inspects, and the parsers that check them.

Each endpoint's body is validated the way OpenAI validates it (a 400 with an
OpenAI error body, naming the ``param``, for what OpenAI rejects), in scripted
and in demo mode alike, so a client that sends what OpenAI would refuse fails
here too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict

from .audio import InvalidWavError, WavFormat, read_complete_wav
from .chat import JsonDict
from .wire import error_response

MAX_SPEECH_INPUT: Final = 4096
TRANSCRIPTION_FORMATS: Final = ("json", "text")
# The image types OpenAI's vision models take, and how each file starts.
IMAGE_SIGNATURES: Final = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}


@dataclass(slots=True)
class RecordedFile:
    """An uploaded multipart file."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request the provider received."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, RecordedFile] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatImage:
    """An image a chat request carried (an ``image_url`` data URL, decoded)."""

    mime_type: str
    data: bytes


@dataclass(slots=True)
class StreamRecord:
    """Progress of one streamed response (chat SSE or speech audio).

    Attributes:
        path: Request path.
        request: The recorded request.
        events_sent: Chat events or speech chunks written so far.
        held: True while waiting for `FakeProvider.release`.
        completed: The full body was written.
        client_closed: The client went away before the body was complete.
        server_aborted: The provider cut the connection (``disconnect_after``).
    """

    path: str
    request: RecordedRequest
    events_sent: int = 0
    held: bool = False
    completed: bool = False
    client_closed: bool = False
    server_aborted: bool = False


@dataclass(slots=True)
class TranscriptionRequest:
    """Fields of one transcription request and its validated WAV."""

    model: str
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool
    wav: WavFormat
    pcm: bytes


@dataclass(slots=True)
class SpeechRequest:
    """Fields of one speech request."""

    model: str
    input: str
    voice: str | dict[str, Any]
    response_format: str
    speed: float
    instructions: str | None
    stream_format: str | None

    @property
    def voice_name(self) -> str:
        """Return the voice's name; a custom voice (``{"id": ...}``) by its id."""
        return self.voice if isinstance(self.voice, str) else str(self.voice["id"])


async def read_json(request: web.Request) -> JsonDict | web.Response:
    """Return the request's JSON object, or a 400 response."""
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "We could not parse the JSON body.")
    if not isinstance(body, dict):
        return error_response(400, "The body must be a JSON object.")
    return body


async def read_multipart(request: web.Request, record: RecordedRequest) -> None:
    """Store the form fields and files of a multipart body in ``record``.

    Raises:
        ValueError: A nested or unnamed part.
    """
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise ValueError("unexpected nested or unnamed part")
        if part.filename is None:
            record.form[part.name] = await part.text()
        else:
            content_type = part.headers.get("Content-Type", "")
            data = bytes(await part.read())
            record.files[part.name] = RecordedFile(part.filename, content_type, data)


async def parse_transcription(
    request: web.Request, record: RecordedRequest
) -> TranscriptionRequest | web.Response:
    """Read and validate a transcription upload like OpenAI does (400 on errors)."""
    if request.content_type != "multipart/form-data":
        return error_response(400, "Expected a multipart/form-data body.")
    try:
        await read_multipart(request, record)
    except ValueError as err:
        return error_response(400, f"Invalid multipart body: {err}")
    upload = record.files.get("file")
    for name, value in (("file", upload), ("model", record.form.get("model"))):
        if value is None:
            return error_response(
                400,
                f"'{name}' is required: 'file' and 'model' are required fields.",
                param=name,
            )
    assert upload is not None  # checked above
    response_format = record.form.get("response_format", "json")
    if response_format not in TRANSCRIPTION_FORMATS:
        return error_response(
            400,
            f"response_format '{response_format}' is not supported by the fake.",
            param="response_format",
        )
    try:
        wav, pcm = read_complete_wav(upload.data)
    except InvalidWavError as err:
        return error_response(
            400, f"Invalid file format: {err}", param="file", code="invalid_value"
        )
    return TranscriptionRequest(
        model=record.form["model"],
        language=record.form.get("language"),
        prompt=record.form.get("prompt"),
        response_format=response_format,
        stream=record.form.get("stream", "false").lower() == "true",
        wav=wav,
        pcm=pcm,
    )


def parse_speech_request(
    body: Mapping[str, Any], formats: Collection[str]
) -> SpeechRequest | web.Response:
    """Validate a speech request body like OpenAI does (400 on errors).

    Args:
        body: The request's JSON.
        formats: The ``response_format`` values this provider can produce.
    """
    text = body.get("input")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_SPEECH_INPUT:
        return error_response(400, "'input' must be 1..4096 characters.", param="input")
    if not isinstance(body.get("model"), str):
        return error_response(400, "'model' is required.", param="model")
    voice = body.get("voice")
    if not is_voice(voice):
        return error_response(400, "'voice' is required.", param="voice")
    response_format = body.get("response_format", "mp3")
    if response_format not in formats:
        return error_response(
            400,
            f"response_format '{response_format}' is not supported here; "
            f"use one of {', '.join(formats)}.",
            param="response_format",
        )
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return error_response(400, "'speed' must be within 0.25..4.0.", param="speed")
    stream_format = body.get("stream_format")
    if stream_format not in (None, "audio"):
        return error_response(
            400, "Only stream_format 'audio' is supported.", param="stream_format"
        )
    return SpeechRequest(
        model=body["model"],
        input=text,
        voice=voice,
        response_format=response_format,
        speed=float(speed),
        instructions=body.get("instructions"),
        stream_format=stream_format,
    )


def is_voice(voice: object) -> TypeGuard[str | dict[str, Any]]:
    """Return whether ``voice`` names a voice, or is a custom one (``{"id": ...}``)."""
    if isinstance(voice, dict):
        voice = voice.get("id")
    return isinstance(voice, str) and bool(voice)


def chat_images(body: JsonDict) -> list[ChatImage] | web.Response:
    """Return the images in a chat request's messages, or a 400 as OpenAI answers.

    An ``image_url`` must be a base64 ``data:`` URL of an image type OpenAI takes,
    and its bytes must be that type (OpenAI refuses what it cannot decode).
    Remote URLs are refused too: this server fetches nothing.
    """
    images: list[ChatImage] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "image_url":
                continue
            image = _data_url_image((part.get("image_url") or {}).get("url"))
            if image is None:
                return error_response(
                    400,
                    "You uploaded an unsupported image. Please make sure your image"
                    " is valid.",
                    code="invalid_image_format",
                    param="messages",
                )
            images.append(image)
    return images


def _data_url_image(url: Any) -> ChatImage | None:
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    header, _, payload = url.removeprefix("data:").partition(",")
    mime_type, _, encoding = header.partition(";")
    if encoding != "base64" or mime_type not in IMAGE_SIGNATURES:
        return None
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        return None
    if not data.startswith(IMAGE_SIGNATURES[mime_type]):
        return None
    return ChatImage(mime_type, data)
