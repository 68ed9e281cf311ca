"""Tests of the pure Chat Completions transforms (no Home Assistant instance)."""

from collections.abc import AsyncIterator, Iterable
import json
from typing import Any, cast

import httpx
import httpx2
import openai
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall
import probatio
import pytest

from homeassistant.components import conversation
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm

from custom_components.xiaozhi.provider.answers import AnswerError
from custom_components.xiaozhi.provider.chat_stream import (
    ERROR_CONNECTION_LOST,
    ERROR_INVALID_AUTH,
    ERROR_PROVIDER,
    ERROR_RATE_LIMITED,
    ERROR_TIMEOUT,
    ERROR_UNREACHABLE,
    ContentDelta,
    StreamOutcome,
    ToolCallAssembler,
    chunks_of_body,
    convert_content,
    error_translation_key,
    format_tool,
    parse_tool_arguments,
    transform_stream,
)

AGENT = "conversation.test"


# -- helpers -----------------------------------------------------------------


class EchoTool(llm.Tool):
    """A tool with a schema, never called here."""

    def __init__(
        self,
        name: str = "HassTurnOn",
        description: str | None = "Turns on a device",
        parameters: probatio.Schema | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.parameters = parameters or probatio.Schema(
            {probatio.Required("name"): str, probatio.Optional("area"): str}
        )

    async def async_call(
        self,
        hass: HomeAssistant,
        tool_input: llm.ToolInput,
        llm_context: llm.LLMContext,
    ) -> llm.ToolResult:
        raise NotImplementedError


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    index: int = 0,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> ChatCompletionChunk:
    """Build a chunk the way the SDK parses one (no validation)."""
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]
        if choices
        else [],
    }
    if usage is not None:
        data["usage"] = usage
    return ChatCompletionChunk.construct(**data)


def fragment(
    index: int | None,
    arguments: str | None = None,
    *,
    call_id: str | None = None,
    name: str | None = None,
) -> ChoiceDeltaToolCall:
    function: dict[str, Any] = {"name": name, "arguments": arguments}
    return ChoiceDeltaToolCall.construct(
        index=index, id=call_id, type="function", function=function
    )


def tool_chunk(*fragments: ChoiceDeltaToolCall) -> ChatCompletionChunk:
    return chunk({"tool_calls": [f.model_dump() for f in fragments]})


async def aiter_of(
    items: Iterable[ChatCompletionChunk], error: Exception | None = None
) -> AsyncIterator[ChatCompletionChunk]:
    for item in items:
        yield item
    if error is not None:
        raise error


async def collect(
    chunks: Iterable[ChatCompletionChunk], error: Exception | None = None
) -> tuple[list[ContentDelta], StreamOutcome]:
    outcome = StreamOutcome()
    deltas = [d async for d in transform_stream(aiter_of(chunks, error), outcome)]
    return deltas, outcome


def tool_inputs(deltas: list[ContentDelta]) -> list[llm.ToolInput]:
    calls: list[llm.ToolInput] = []
    for delta in deltas:
        if "tool_calls" in delta:
            calls += (
                cast(conversation.AssistantContentDeltaDict, delta)["tool_calls"] or []
            )
    return calls


def http_request() -> httpx2.Request:
    return httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")


def status_error(cls: type[openai.APIStatusError], status: int) -> Exception:
    response = httpx2.Response(status, request=http_request())
    return cls("boom", response=response, body=None)


# -- format_tool -------------------------------------------------------------


def test_format_tool_makes_a_function_tool_from_the_schema() -> None:
    assert format_tool(EchoTool(), None) == {
        "type": "function",
        "function": {
            "name": "HassTurnOn",
            "description": "Turns on a device",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "area": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
        },
    }


def test_format_tool_without_description_or_parameters() -> None:
    tool = EchoTool("GetTime", None, probatio.Schema({}))

    assert format_tool(tool, None) == {
        "type": "function",
        "function": {
            "name": "GetTime",
            "parameters": {
                "type": "object",
                "properties": {},
                "additionalProperties": False,
            },
        },
    }


def test_format_tool_drops_top_level_combinators_and_keeps_an_object() -> None:
    schema = probatio.Schema(
        probatio.Any({probatio.Required("a"): str}, {probatio.Required("b"): int})
    )

    function = format_tool(EchoTool(parameters=schema), None)["function"]

    assert function["parameters"] == {"type": "object", "properties": {}}


def test_format_tool_uses_the_custom_serializer() -> None:
    def brightness(value: Any) -> int:
        return int(value)

    seen: list[Any] = []

    def serializer(validator: Any) -> Any:
        seen.append(validator)
        if validator is brightness:
            return {"type": "integer", "minimum": 0, "maximum": 100}
        return probatio.UNSUPPORTED

    schema = probatio.Schema({probatio.Required("brightness"): brightness})

    function = format_tool(EchoTool(parameters=schema), serializer)["function"]
    parameters = cast(dict[str, Any], function["parameters"])

    assert brightness in seen
    assert parameters["properties"]["brightness"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
    }


# -- convert_content ---------------------------------------------------------


def test_convert_content_maps_every_role() -> None:
    call = llm.ToolInput("HassTurnOn", {"name": "厨房"}, id="call_1")
    contents: list[conversation.Content] = [
        conversation.SystemContent(content="Be brief."),
        conversation.UserContent(content="Turn on the kitchen"),
        conversation.AssistantContent(
            agent_id=AGENT,
            content="Sure.",
            thinking_content="The user wants light.",
            tool_calls=[call],
        ),
        conversation.ToolResultContent(
            agent_id=AGENT,
            tool_call_id="call_1",
            tool_name="HassTurnOn",
            result=llm.ToolResult(data={"success": True}),
        ),
        conversation.AssistantContent(
            agent_id=AGENT, content="Done.", thinking_content="Said it."
        ),
    ]

    assert convert_content(contents) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Turn on the kitchen"},
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "HassTurnOn",
                        "arguments": '{"name":"厨房"}',
                    },
                }
            ],
            "reasoning_content": "The user wants light.",
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": '{"data":{"success":true},"error":false}',
        },
        # Thinking of an answer without tool calls is not sent back.
        {"role": "assistant", "content": "Done."},
    ]


def test_convert_content_tool_calls_without_text_or_thinking() -> None:
    call = llm.ToolInput("HassTurnOff", {}, id="c")
    contents: list[conversation.Content] = [
        conversation.AssistantContent(agent_id=AGENT, tool_calls=[call]),
        conversation.ToolResultContent(
            agent_id=AGENT,
            tool_call_id="c",
            tool_name="HassTurnOff",
            result=llm.ToolResult(data={"error": "Boom"}, error=True),
        ),
    ]

    messages = convert_content(contents)

    assert messages == [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "HassTurnOff", "arguments": "{}"},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "c",
            "content": '{"data":{"error":"Boom"},"error":true}',
        },
    ]


def test_convert_content_skips_thinking_only_and_empty_assistant_content() -> None:
    contents: list[conversation.Content] = [
        conversation.UserContent(content="hi"),
        conversation.AssistantContent(agent_id=AGENT, thinking_content="hmm"),
        conversation.AssistantContent(agent_id=AGENT, content=""),
    ]

    assert convert_content(contents) == [{"role": "user", "content": "hi"}]


# -- tool call assembly --------------------------------------------------------


def test_assembler_joins_openai_style_parallel_fragments() -> None:
    assembler = ToolCallAssembler()
    for piece in [
        fragment(0, "", call_id="call_a", name="HassTurnOn"),
        fragment(0, '{"na'),
        fragment(0, 'me": "Kitchen"}'),
        fragment(1, "", call_id="call_b", name="HassTurnOff"),
        fragment(1, '{"name": "Hall"}'),
    ]:
        assembler.add(piece)

    pending_before = assembler.pending
    deltas = assembler.drain()

    assert (pending_before, assembler.pending) == (True, False)
    assert deltas == [
        {
            "tool_calls": [
                llm.ToolInput("HassTurnOn", {"name": "Kitchen"}, id="call_a"),
                llm.ToolInput("HassTurnOff", {"name": "Hall"}, id="call_b"),
            ]
        }
    ]
    assert assembler.drain() == []


def test_assembler_handles_interleaved_fragments_by_index() -> None:
    assembler = ToolCallAssembler()
    for piece in [
        fragment(0, '{"name":', call_id="a", name="HassTurnOn"),
        fragment(1, '{"name":', call_id="b", name="HassTurnOn"),
        fragment(1, ' "B"}'),
        fragment(0, ' "A"}'),
    ]:
        assembler.add(piece)

    calls = tool_inputs(assembler.drain())

    assert [(c.id, c.tool_args) for c in calls] == [
        ("a", {"name": "A"}),
        ("b", {"name": "B"}),
    ]


def test_assembler_ignores_repeated_id_and_name() -> None:
    # Some services repeat the head in every fragment.
    assembler = ToolCallAssembler()
    assembler.add(fragment(0, '{"a":', call_id="x", name="Tool"))
    assembler.add(fragment(0, " 1}", call_id="x", name="Tool"))
    assembler.add(ChoiceDeltaToolCall.construct(index=0, id="x", function=None))

    assert tool_inputs(assembler.drain()) == [llm.ToolInput("Tool", {"a": 1}, id="x")]


def test_assembler_splits_calls_that_all_use_index_zero() -> None:
    assembler = ToolCallAssembler()
    assembler.add(fragment(0, '{"name": "A"}', call_id="a", name="HassTurnOn"))
    assembler.add(fragment(0, '{"name": "B"}', call_id="b", name="HassTurnOn"))

    calls = tool_inputs(assembler.drain())

    assert [(c.id, c.tool_args) for c in calls] == [
        ("a", {"name": "A"}),
        ("b", {"name": "B"}),
    ]


def test_assembler_accepts_calls_without_index_or_id() -> None:
    assembler = ToolCallAssembler()
    assembler.add(fragment(None, "", name="GetTime"))

    (call,) = tool_inputs(assembler.drain())

    assert call.tool_name == "GetTime"
    assert call.tool_args == {}
    assert call.id  # a generated one, used by the call and its result alike
    assert not call.external


def test_assembler_answers_invalid_arguments_with_an_error_result() -> None:
    assembler = ToolCallAssembler()
    assembler.add(fragment(0, '{"name": "A"}', call_id="good", name="HassTurnOn"))
    assembler.add(fragment(1, '{"name": ', call_id="bad", name="HassTurnOn"))

    deltas = assembler.drain()

    assert deltas[0] == {
        "tool_calls": [
            llm.ToolInput("HassTurnOn", {"name": "A"}, id="good"),
            llm.ToolInput("HassTurnOn", {}, id="bad", external=True),
        ]
    }
    assert deltas[1] == {
        "role": "tool_result",
        "tool_call_id": "bad",
        "tool_name": "HassTurnOn",
        "result": llm.ToolResult(
            data={
                "error": "InvalidToolCall",
                "error_text": 'The arguments are not a JSON object: {"name": ',
            },
            error=True,
        ),
    }
    assert len(deltas) == 2


def test_assembler_answers_a_call_without_name_with_an_error_result() -> None:
    assembler = ToolCallAssembler()
    assembler.add(fragment(0, "{}", call_id="anon"))

    deltas = assembler.drain()

    assert deltas[0] == {
        "tool_calls": [llm.ToolInput("", {}, id="anon", external=True)]
    }
    assert deltas[1]["result"].data == {  # type: ignore[typeddict-item]
        "error": "InvalidToolCall",
        "error_text": "The tool call has no function name.",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ("null", {}),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ('"{\\"a\\": 1}"', {"a": 1}),
        ("[1]", None),
        ('"text"', None),
        ("{", None),
        ('"{"', None),
    ],
)
def test_parse_tool_arguments(raw: str, expected: dict[str, Any] | None) -> None:
    assert parse_tool_arguments(raw) == expected


# -- transform_stream ------------------------------------------------------------


async def test_text_stream_yields_role_then_non_empty_content() -> None:
    deltas, outcome = await collect(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": None}),
            chunk({"content": "lo"}),
            chunk({}, finish_reason="stop"),
        ]
    )

    assert deltas == [{"role": "assistant"}, {"content": "Hel"}, {"content": "lo"}]
    assert outcome == StreamOutcome(finish_reason="stop")


async def test_usage_only_chunk_and_null_delta_are_harmless() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}

    deltas, outcome = await collect(
        [
            chunk({"content": "Hi"}),
            chunk(None, finish_reason="stop"),
            chunk(choices=False, usage=usage),
        ]
    )

    assert deltas == [{"role": "assistant"}, {"content": "Hi"}]
    assert outcome.usage is not None
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (7, 2)


async def test_reasoning_goes_to_thinking_content_under_either_name() -> None:
    deltas, _ = await collect(
        [
            chunk({"reasoning_content": "想", "content": None}),
            chunk({"reasoning": "一想"}),
            chunk({"reasoning_content": "", "content": "答"}),
            chunk({"reasoning_content": None, "content": "案"}),
        ]
    )

    assert deltas == [
        {"role": "assistant"},
        {"thinking_content": "想"},
        {"thinking_content": "一想"},
        {"content": "答"},
        {"content": "案"},
    ]


async def test_other_choices_are_ignored() -> None:
    deltas, _ = await collect(
        [chunk({"content": "a"}), chunk({"content": "b"}, index=1)]
    )

    assert deltas == [{"role": "assistant"}, {"content": "a"}]


async def test_a_choice_without_index_is_the_one() -> None:
    deltas, _ = await collect([chunk({"content": "a"}, index=cast(int, None))])

    assert deltas == [{"role": "assistant"}, {"content": "a"}]


async def test_an_empty_finish_reason_in_every_chunk_ends_nothing() -> None:
    deltas, outcome = await collect(
        [
            tool_chunk(fragment(0, '{"name":', call_id="c0", name="HassTurnOn")),
            chunk({"content": None}, finish_reason=""),
            tool_chunk(fragment(0, ' "Hall"}')),
            chunk({}, finish_reason="tool_calls"),
        ]
    )

    assert deltas == [
        {"role": "assistant"},
        {"tool_calls": [llm.ToolInput("HassTurnOn", {"name": "Hall"}, id="c0")]},
    ]
    assert outcome.finish_reason == "tool_calls"


async def test_tool_calls_are_emitted_when_the_choice_finishes() -> None:
    deltas, outcome = await collect(
        [
            chunk({"content": "On it."}),
            tool_chunk(fragment(0, "", call_id="c0", name="HassTurnOn")),
            tool_chunk(fragment(0, '{"name": "Kitchen"}')),
            tool_chunk(
                fragment(1, '{"name": "Hall"}', call_id="c1", name="HassTurnOn")
            ),
            chunk({}, finish_reason="tool_calls"),
            chunk(choices=False, usage={"prompt_tokens": 1, "completion_tokens": 1}),
        ]
    )

    assert deltas == [
        {"role": "assistant"},
        {"content": "On it."},
        {
            "tool_calls": [
                llm.ToolInput("HassTurnOn", {"name": "Kitchen"}, id="c0"),
                llm.ToolInput("HassTurnOn", {"name": "Hall"}, id="c1"),
            ]
        },
    ]
    assert outcome.finish_reason == "tool_calls"


async def test_tool_calls_are_emitted_at_the_end_without_finish_reason() -> None:
    deltas, outcome = await collect(
        [tool_chunk(fragment(0, "{}", call_id="c0", name="GetTime"))]
    )

    assert deltas == [
        {"role": "assistant"},
        {"tool_calls": [llm.ToolInput("GetTime", {}, id="c0")]},
    ]
    assert outcome.finish_reason is None


async def test_failure_mid_stream_keeps_text_and_drops_unfinished_calls() -> None:
    error = httpx.RemoteProtocolError("peer closed connection")

    deltas, outcome = await collect(
        [
            chunk({"content": "Part"}),
            tool_chunk(fragment(0, '{"na', call_id="c0", name="HassTurnOn")),
        ],
        error,
    )

    assert deltas == [{"role": "assistant"}, {"content": "Part"}]
    assert outcome.error is error


async def test_in_stream_error_event_is_recorded() -> None:
    error = openai.APIError("overloaded", http_request(), body=None)

    deltas, outcome = await collect([chunk({"content": "A"})], error)

    assert deltas == [{"role": "assistant"}, {"content": "A"}]
    assert outcome.error is error


async def test_unexpected_errors_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        await collect([chunk({"content": "A"})], KeyError("bug"))


# -- chunks_of_body ----------------------------------------------------------------

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Both on.",
                "reasoning_content": "Two lights.",
                "tool_calls": [
                    {
                        "id": "c0",
                        "type": "function",
                        "function": {"name": "HassTurnOn", "arguments": '{"a":1}'},
                    },
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "HassTurnOn", "arguments": '{"a":2}'},
                    },
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
}


async def deltas_of_body(
    content_type: str | None, body: str
) -> tuple[list[ContentDelta], StreamOutcome]:
    return await collect(chunks_of_body(content_type, body.encode()))


async def test_a_completion_answering_a_stream_takes_the_streamed_path() -> None:
    deltas, outcome = await deltas_of_body(
        "application/json; charset=utf-8", json.dumps(COMPLETION)
    )

    assert deltas == [
        {"role": "assistant"},
        {"thinking_content": "Two lights."},
        {"content": "Both on."},
        {
            "tool_calls": [
                llm.ToolInput("HassTurnOn", {"a": 1}, id="c0"),
                llm.ToolInput("HassTurnOn", {"a": 2}, id="c1"),
            ]
        },
    ]
    assert outcome.finish_reason == "tool_calls"
    assert outcome.usage is not None
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (7, 3)


async def test_a_completion_without_usage_index_or_finish_reason() -> None:
    bare = {"choices": [{"message": {"content": "Hi."}}]}

    deltas, outcome = await deltas_of_body(None, json.dumps(bare))

    assert deltas == [{"role": "assistant"}, {"content": "Hi."}]
    assert (outcome.finish_reason, outcome.usage) == (None, None)


async def test_events_under_another_content_type_are_read_as_events() -> None:
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo."}}]},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events)

    deltas, _ = await deltas_of_body("application/json", body + "data: [DONE]\n\n")

    assert deltas == [{"role": "assistant"}, {"content": "Hel"}, {"content": "lo."}]


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", '{"error": {"message": "no quota"}}', "no quota"),
        ("text/plain", "Bad Gateway", "no chat completion: Bad Gateway"),
        ("application/json", '{"object": "list"}', 'completion: {"object": "list"}'),
        ("application/json", 'data: {"error": "overloaded"}', "overloaded"),
    ],
    ids=["json-error", "text", "json-without-choices", "error-event"],
)
async def test_a_body_without_a_completion_is_a_recorded_error(
    content_type: str, body: str, message: str
) -> None:
    outcome = StreamOutcome()

    async def chunks() -> AsyncIterator[ChatCompletionChunk]:
        for item in chunks_of_body(content_type, body.encode()):
            yield item

    deltas = [delta async for delta in transform_stream(chunks(), outcome)]

    assert deltas == [{"role": "assistant"}]
    assert isinstance(outcome.error, AnswerError)
    assert message in str(outcome.error)
    assert error_translation_key(outcome.error) == ERROR_PROVIDER


# -- error_translation_key -------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "key"),
    [
        (status_error(openai.AuthenticationError, 401), ERROR_INVALID_AUTH),
        (status_error(openai.RateLimitError, 429), ERROR_RATE_LIMITED),
        (status_error(openai.InternalServerError, 503), ERROR_PROVIDER),
        (status_error(openai.BadRequestError, 400), ERROR_PROVIDER),
        (openai.APITimeoutError(http_request()), ERROR_TIMEOUT),
        (httpx.ReadTimeout("slow"), ERROR_TIMEOUT),
        (openai.APIConnectionError(request=http_request()), ERROR_UNREACHABLE),
        (httpx.RemoteProtocolError("cut"), ERROR_CONNECTION_LOST),
        (openai.APIError("in-stream", http_request(), body=None), ERROR_PROVIDER),
        (json.JSONDecodeError("bad", "{", 0), ERROR_PROVIDER),
    ],
)
def test_error_translation_key(error: Exception, key: str) -> None:
    assert error_translation_key(error) == key
