"""Reading what a roughly compatible service answered, by what it is.

The SDK picks its parser from what was asked (``stream=True`` reads server-sent
events), and services that call themselves OpenAI-compatible often answer in
another shape: one JSON document to a streamed request, events under a JSON or
text Content-Type, a 200 whose body is an error. The transcription and chat
code read such bodies with the pure functions here: the media type, the events
of a server-sent event stream, JSON objects, in-band errors. Nothing here does
I/O.
"""

import json
import re
from typing import Any, Final

import openai

EVENT_STREAM: Final = "text/event-stream"
DONE: Final = "[DONE]"
# Where the answer starts to be shown in an error: enough to recognise it.
EXCERPT_CHARS: Final = 120

_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
# How the event streams of services start; a transcript starting so is unheard of.
_EVENT_START: Final = re.compile(r"(data|event):")

type JsonObject = dict[str, Any]


class AnswerError(openai.OpenAIError):
    """The service answered 200, but with an error or a body holding no answer."""


def media_type(content_type: str | None) -> str:
    """Return the media type of a Content-Type header, lowercase, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def charset(content_type: str | None) -> str:
    """Return the charset a Content-Type names; UTF-8 (JSON's and SSE's) if none."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def body_text(content_type: str | None, body: bytes) -> str:
    """Return the body as text in its charset (an unknown charset reads as UTF-8)."""
    try:
        return body.decode(charset(content_type), errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def is_event_stream(content_type: str | None, text: str) -> bool:
    """Return whether a body is server-sent events, whatever its Content-Type says."""
    if media_type(content_type) == EVENT_STREAM:
        return True
    first_line = text.lstrip().split("\n", 1)[0]
    return _EVENT_START.match(first_line) is not None


def event_data(text: str) -> list[str]:
    """Return the data of each event of a server-sent event stream, in order.

    Follows the event stream format: ``data:`` lines of one event are joined by
    line breaks, a blank line ends the event, comments and other fields are
    skipped. An event the body ends in without a blank line still counts
    (servers that omit the last one).
    """
    events: list[str] = []
    data: list[str] | None = None
    for line in _LINE_BREAK.split(text):
        if not line:
            if data is not None:
                events.append("\n".join(data))
            data = None
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data = [*(data or []), value.removeprefix(" ")]
    if data is not None:
        events.append("\n".join(data))
    return events


def json_object(text: str) -> JsonObject | None:
    """Return the text as a JSON object, or None when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def event_objects(text: str) -> list[JsonObject]:
    """Return the JSON objects of an event stream, up to its ``[DONE]``.

    Raises:
        AnswerError: An event is an error (``{"error": ...}``) or not a JSON
            object.
    """
    objects: list[JsonObject] = []
    for data in event_data(text):
        if data.strip() == DONE:
            break
        if (payload := json_object(data)) is None:
            raise AnswerError(f"The service sent an event that is not JSON: {data!r}")
        raise_for_error(payload)
        objects.append(payload)
    return objects


def raise_for_error(payload: JsonObject) -> None:
    """Raise when a JSON answer is an error, as some services answer with a 200.

    Raises:
        AnswerError: ``payload`` carries an ``error`` (an object with a message,
            or a string).
    """
    error = payload.get("error")
    if not error:
        return
    message = error.get("message") if isinstance(error, dict) else error
    raise AnswerError(
        f"The service answered with an error: {message or json.dumps(error)}"
    )


def excerpt(text: str) -> str:
    """Return the start of an answer, for an error message."""
    text = text.strip()
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"
