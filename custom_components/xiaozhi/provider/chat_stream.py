"""Transforms between Home Assistant's chat log and the Chat Completions API.

Nothing here touches an entity: tools and chat log content go in, request
payloads come out; the service's answer goes in, chat log deltas come out.

The answer is read by what it is, not by what was asked (`answer_chunks`): an
event stream goes through the SDK's own stream, anything else (a service that
ignores ``stream`` and answers one ``chat.completion``, or events under another
Content-Type) becomes the same chunks, so one transform serves every shape.
Services also differ within the stream: no ``usage``, no ``finish_reason`` (the
end of the stream ends the message), chunks with no choices, null or empty
content, the role in every chunk, tool calls in one piece; `transform_stream`
takes each as it comes.
"""

from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
import json
from typing import Any, cast

import httpx
import openai
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.chat.chat_completion_chunk import ChoiceDelta, ChoiceDeltaToolCall
from openai.types.shared_params import FunctionDefinition
import probatio

from homeassistant.components import conversation
from homeassistant.helpers import llm
from homeassistant.helpers.json import json_dumps

from .answers import (
    EVENT_STREAM,
    AnswerError,
    JsonObject,
    body_text,
    event_objects,
    excerpt,
    is_event_stream,
    json_object,
    media_type,
    raise_for_error,
)

type ContentDelta = (
    conversation.AssistantContentDeltaDict | conversation.ToolResultContentDeltaDict
)
# What `completions.with_streaming_response.create(stream=True)` hands over.
type ChatAnswer = openai.AsyncAPIResponse[openai.AsyncStream[ChatCompletionChunk]]

# Top-level JSON schema keys that function tool parameters may not use.
UNSUPPORTED_SCHEMA_KEYS = frozenset({"oneOf", "anyOf", "allOf", "enum", "not"})

# Where compatible services put the model's thinking: DeepSeek, Qwen and vLLM say
# `reasoning_content`, OpenRouter and Ollama say `reasoning`.
REASONING_FIELDS = ("reasoning_content", "reasoning")

# What a broken stream raises while it is being read: an in-stream error event
# (openai.APIError), a dropped or stalled connection (httpx), or garbage on the wire.
STREAM_ERRORS: tuple[type[Exception], ...] = (
    openai.OpenAIError,
    httpx.RequestError,
    json.JSONDecodeError,
)

# Translation keys (under "exceptions") of the failures a chat request can end in.
ERROR_INVALID_AUTH = "invalid_auth"
ERROR_RATE_LIMITED = "rate_limited"
ERROR_TIMEOUT = "provider_timeout"
ERROR_UNREACHABLE = "provider_unreachable"
ERROR_CONNECTION_LOST = "connection_lost"
ERROR_PROVIDER = "provider_error"


class AssistantMessageParam(ChatCompletionAssistantMessageParam, total=False):
    """An assistant message that may hand the model's thinking back.

    DeepSeek (and Kimi) answer 400 when the thinking that led to a tool call is
    missing from later requests; other services ignore the extra key.
    """

    reasoning_content: str


def format_tool(
    tool: llm.Tool, custom_serializer: Callable[[Any], Any] | None
) -> ChatCompletionFunctionToolParam:
    """Return the Chat Completions function tool for a Home Assistant tool."""
    schema: dict[str, Any] = probatio.to_openapi(
        tool.parameters, custom_serializer=custom_serializer, openapi_version="3.1.0"
    )
    schema = {
        key: value
        for key, value in schema.items()
        if key not in UNSUPPORTED_SCHEMA_KEYS
    }
    if "type" not in schema:
        # Some services reject parameters that do not say they are an object.
        schema = {"type": "object", "properties": {}, **schema}
    function = FunctionDefinition(name=tool.name, parameters=schema)
    if tool.description:
        function["description"] = tool.description
    return ChatCompletionFunctionToolParam(type="function", function=function)


def convert_content(
    contents: Iterable[conversation.Content],
) -> list[ChatCompletionMessageParam]:
    """Return the Chat Completions messages for chat log content."""
    messages: list[ChatCompletionMessageParam] = []
    for content in contents:
        match content:
            case conversation.SystemContent():
                messages.append({"role": "system", "content": content.content})
            case conversation.UserContent():
                messages.append({"role": "user", "content": content.content})
            case conversation.AssistantContent():
                if message := _assistant_message(content):
                    messages.append(message)
            case conversation.ToolResultContent():  # pragma: no branch
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": content.tool_call_id,
                        "content": json_dumps(
                            {"data": content.result.data, "error": content.result.error}
                        ),
                    }
                )
    return messages


def _assistant_message(
    content: conversation.AssistantContent,
) -> AssistantMessageParam | None:
    """Return the message for assistant content; None when only thinking is left."""
    if not content.content and not content.tool_calls:
        return None
    message = AssistantMessageParam(role="assistant")
    if content.content:
        message["content"] = content.content
    if content.tool_calls:
        message["tool_calls"] = [
            ChatCompletionMessageFunctionToolCallParam(
                id=call.id,
                type="function",
                function={
                    "name": call.tool_name,
                    "arguments": json_dumps(call.tool_args),
                },
            )
            for call in content.tool_calls
        ]
        if content.thinking_content:
            message["reasoning_content"] = content.thinking_content
    return message


@dataclass(slots=True)
class _PartialToolCall:
    """A tool call whose fragments are still arriving."""

    index: int | None
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Assemble streamed tool call fragments into complete calls.

    OpenAI sends the id and name in a call's first fragment and argument pieces
    after it, keyed by ``index``; parallel calls have their own index. Services
    differ at the edges, so: a repeated id or name is not appended twice, a new
    id on a used index starts a new call (services that number every call 0),
    and arguments may come in one piece with the head.
    """

    def __init__(self) -> None:
        """Start with no calls."""
        self._calls: list[_PartialToolCall] = []
        self._by_index: dict[int | None, _PartialToolCall] = {}

    @property
    def pending(self) -> bool:
        """Return whether fragments arrived since the last drain."""
        return bool(self._calls)

    def add(self, fragment: ChoiceDeltaToolCall) -> None:
        """Add one fragment of a streamed tool call."""
        call = self._call_for(fragment)
        if fragment.id and not call.call_id:
            call.call_id = fragment.id
        if (function := fragment.function) is None:
            return
        if function.name and not call.name:
            call.name = function.name
        if function.arguments:
            call.arguments.append(function.arguments)

    def _call_for(self, fragment: ChoiceDeltaToolCall) -> _PartialToolCall:
        call = self._by_index.get(fragment.index)
        if call is None or (
            fragment.id and call.call_id and fragment.id != call.call_id
        ):
            call = _PartialToolCall(fragment.index)
            self._calls.append(call)
            self._by_index[fragment.index] = call
        return call

    def drain(self) -> list[ContentDelta]:
        """Return the chat log deltas of the assembled calls and forget them.

        Valid calls come as one ``tool_calls`` delta, so Home Assistant runs them
        at once. A call the model botched (arguments that are not a JSON object,
        no name) is recorded as an external call answered by an error result:
        the model sees what went wrong and can try again, nothing runs.
        """
        tool_inputs: list[llm.ToolInput] = []
        error_results: list[ContentDelta] = []
        for call in self._calls:
            tool_input, problem = _tool_input(call)
            tool_inputs.append(tool_input)
            if problem is not None:
                error_results.append(
                    {
                        "role": "tool_result",
                        "tool_call_id": tool_input.id,
                        "tool_name": tool_input.tool_name,
                        "result": llm.ToolResult(
                            data={"error": "InvalidToolCall", "error_text": problem},
                            error=True,
                        ),
                    }
                )
        self._calls.clear()
        self._by_index.clear()
        if not tool_inputs:
            return []
        return [{"tool_calls": tool_inputs}, *error_results]


def _tool_input(call: _PartialToolCall) -> tuple[llm.ToolInput, str | None]:
    """Return the tool input for a call, and what is wrong with it if anything."""
    raw = "".join(call.arguments)
    arguments = parse_tool_arguments(raw)
    problem: str | None = None
    if not call.name:
        problem = "The tool call has no function name."
    elif arguments is None:
        problem = f"The arguments are not a JSON object: {raw[:200]}"
    tool_input = llm.ToolInput(call.name, arguments or {}, external=problem is not None)
    if call.call_id:
        tool_input.id = call.call_id
    return tool_input, problem


def parse_tool_arguments(raw: str) -> dict[str, Any] | None:
    """Return streamed tool arguments as a dict; None if they are not an object.

    Empty arguments mean no arguments. Some services encode the object twice
    (a JSON string holding the JSON object), which is unwrapped.
    """
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
        if isinstance(value, str):
            value = json.loads(value)
    except json.JSONDecodeError:
        return None
    if value is None:
        return {}
    return cast(dict[str, Any], value) if isinstance(value, dict) else None


async def answer_chunks(answer: ChatAnswer) -> AsyncGenerator[ChatCompletionChunk]:
    """Yield the chunks of a chat answer, streamed or not.

    An event stream is read by the SDK as it arrives; any other body is read
    whole and turned into chunks (`chunks_of_body`).

    Raises:
        openai.OpenAIError, httpx.RequestError: Reading the answer failed, or it
            is not a chat completion (`AnswerError`).
    """
    if media_type(answer.headers.get("content-type")) == EVENT_STREAM:
        stream = await answer.parse(to=openai.AsyncStream[ChatCompletionChunk])
        async for chunk in stream:
            yield chunk
        return
    body = await answer.read()
    for chunk in chunks_of_body(answer.headers.get("content-type"), body):
        yield chunk


def chunks_of_body(content_type: str | None, body: bytes) -> list[ChatCompletionChunk]:
    """Return the chunks of a chat answer read whole: events, or one completion.

    A ``chat.completion`` becomes one chunk whose delta is the message, so its
    text, thinking, tool calls, finish reason and usage take the streamed path.

    Raises:
        AnswerError: The body is an error, or neither events nor a completion.
    """
    text = body_text(content_type, body)
    if is_event_stream(content_type, text):
        return [ChatCompletionChunk.construct(**event) for event in event_objects(text)]
    answer = json_object(text)
    if answer is not None:
        raise_for_error(answer)
    if answer is None or not isinstance(answer.get("choices"), list):
        raise AnswerError(f"The service answered no chat completion: {excerpt(text)}")
    return [ChatCompletionChunk.construct(**completion_as_chunk(answer))]


def completion_as_chunk(completion: JsonObject) -> JsonObject:
    """Return a ``chat.completion`` as the one chunk that would have streamed it.

    Each message becomes its choice's delta; its tool calls get the ``index``
    that streamed tool calls carry.
    """
    choices: list[JsonObject] = []
    for position, choice in enumerate(completion["choices"]):
        message = dict(choice.get("message") or {})
        if calls := message.get("tool_calls"):
            message["tool_calls"] = [
                {"index": index, **call} for index, call in enumerate(calls)
            ]
        choices.append(
            {
                "index": choice.get("index", position),
                "delta": message,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {**completion, "object": "chat.completion.chunk", "choices": choices}


@dataclass(slots=True)
class StreamOutcome:
    """What a stream reported besides its deltas.

    Attributes:
        finish_reason: Why the model stopped (``stop``, ``tool_calls``, ``length``...).
        usage: Token usage, when the service sent it.
        error: The failure that ended the stream early; the deltas before it
            were delivered, so the partial answer stays in the chat log.
    """

    finish_reason: str | None = None
    usage: CompletionUsage | None = None
    error: Exception | None = None


async def transform_stream(
    chunks: AsyncIterable[ChatCompletionChunk], outcome: StreamOutcome
) -> AsyncGenerator[ContentDelta]:
    """Turn streamed Chat Completions chunks into chat log deltas.

    Yields one ``role`` delta, then ``thinking_content`` and ``content`` pieces as
    they arrive (empty ones dropped), then the assembled tool calls when the
    choice finishes (or the stream ends without saying so). A stream that fails
    while being read ends quietly with the error recorded in ``outcome``;
    half-assembled tool calls are dropped then, never run.
    """
    assembler = ToolCallAssembler()
    yield {"role": "assistant"}
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                outcome.usage = chunk.usage
            for delta in _chunk_deltas(chunk, assembler, outcome):
                yield delta
    except STREAM_ERRORS as err:
        outcome.error = err
        return
    for delta in assembler.drain():
        yield delta


def _chunk_deltas(
    chunk: ChatCompletionChunk, assembler: ToolCallAssembler, outcome: StreamOutcome
) -> Iterator[ContentDelta]:
    for choice in chunk.choices:
        # Only one completion is requested; a service numbering it otherwise
        # than 0 is not worth guessing about (one leaving it out means the one).
        if choice.index not in (0, None):
            continue
        # Typed as always present, but some services send `"delta": null`.
        delta = cast(ChoiceDelta | None, choice.delta)
        if delta is not None:
            if thinking := reasoning_text(delta):
                yield {"thinking_content": thinking}
            if delta.content:
                yield {"content": delta.content}
            for fragment in delta.tool_calls or ():
                assembler.add(fragment)
        # Some services send an empty finish reason with every chunk: not an end.
        if choice.finish_reason:
            outcome.finish_reason = choice.finish_reason
            yield from assembler.drain()


def reasoning_text(delta: ChoiceDelta) -> str | None:
    """Return the thinking carried by a delta, under whichever name it came."""
    extra = delta.model_extra or {}
    for name in REASONING_FIELDS:
        if isinstance(text := extra.get(name), str) and text:
            return text
    return None


def error_translation_key(err: Exception) -> str:
    """Return the translation key of the message for a failed chat request."""
    match err:
        case openai.AuthenticationError():
            return ERROR_INVALID_AUTH
        case openai.RateLimitError():
            return ERROR_RATE_LIMITED
        case openai.APITimeoutError() | httpx.TimeoutException():
            return ERROR_TIMEOUT
        case openai.APIConnectionError():
            return ERROR_UNREACHABLE
        case httpx.RequestError():
            return ERROR_CONNECTION_LOST
    return ERROR_PROVIDER
