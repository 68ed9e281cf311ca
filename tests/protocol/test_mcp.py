"""The MCP client of the Xiaozhi channel, against a scripted device."""

import asyncio
from collections.abc import Callable, Mapping
import logging
from typing import Any

import pytest

from custom_components.xiaozhi.protocol import mcp
from custom_components.xiaozhi.protocol.mcp import (
    MAX_TOOL_PAGES,
    MCP_PROTOCOL_VERSION,
    McpClient,
    McpClientInfo,
    McpClosedError,
    McpError,
    McpServerInfo,
    McpTimeoutError,
    McpTool,
    McpToolResult,
    parse_tool,
    response_id,
)

CLIENT = McpClientInfo("Home Assistant", "2026.10.4")

type Responder = Callable[[dict[str, Any]], dict[str, Any] | None]


class ScriptedDevice:
    """Receives what the client sends; a responder builds each reply payload."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.responder = responder
        self.client = McpClient(self.send, client=CLIENT, name="Kitchen")
        self.fail_send = False

    async def send(self, payload: dict[str, Any]) -> None:
        if self.fail_send:
            raise ConnectionError("socket gone")
        self.sent.append(payload)
        if self.responder is not None and "id" in payload:
            reply = self.responder(payload)
            if reply is not None:
                # Replies arrive later, from the receive loop.
                asyncio.get_running_loop().call_soon(self.client.handle_message, reply)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return [p for p in self.sent if "id" in p]


def result(payload: Mapping[str, Any], value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": payload["id"], "result": value}


def error(payload: Mapping[str, Any], value: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": payload["id"], "error": value}


def tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"{name} tool",
        "inputSchema": {"type": "object"},
    }


def paged(pages: dict[str, tuple[list[Any], str | None]]) -> Responder:
    """Answer tools/list from pages keyed by cursor: (tools, nextCursor)."""

    def respond(payload: dict[str, Any]) -> dict[str, Any]:
        tools, next_cursor = pages[payload["params"]["cursor"]]
        answer: dict[str, Any] = {"tools": tools}
        if next_cursor is not None:
            answer["nextCursor"] = next_cursor
        return result(payload, answer)

    return respond


async def test_initialize_sends_numeric_ids_and_the_initialized_notification() -> None:
    device = ScriptedDevice(
        lambda p: result(
            p,
            {
                "protocolVersion": "2024-11-05",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bread-compact-wifi", "version": "1.9.2"},
            },
        )
    )
    info = await device.client.initialize()
    assert info == McpServerInfo("bread-compact-wifi", "1.9.2", "2024-11-05")
    assert device.client.server_info == info
    request, notification = device.sent
    assert request["jsonrpc"] == "2.0"
    assert request["method"] == "initialize"
    assert request["id"] == 1
    assert type(request["id"]) is int
    assert request["params"]["protocolVersion"] == MCP_PROTOCOL_VERSION
    assert request["params"]["clientInfo"]["name"] == "Home Assistant"
    assert notification == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert device.client.pending == 0


async def test_initialize_tolerates_odd_server_info() -> None:
    device = ScriptedDevice(lambda p: result(p, {"serverInfo": "board"}))
    assert await device.client.initialize() == McpServerInfo()
    device.responder = lambda p: result(
        p, {"serverInfo": {"name": 5}, "protocolVersion": 1}
    )
    assert await device.client.initialize() == McpServerInfo()


async def test_tools_are_followed_across_pages() -> None:
    device = ScriptedDevice(
        paged(
            {
                "": ([tool("self.a"), tool("self.b")], "self.c"),
                "self.c": ([tool("self.c")], "self.d"),
                "self.d": ([tool("self.d")], ""),
            }
        )
    )
    tools = await device.client.list_tools()
    assert [t.name for t in tools] == ["self.a", "self.b", "self.c", "self.d"]
    assert tools[0] == McpTool("self.a", "self.a tool", {"type": "object"})
    assert [r["params"] for r in device.requests] == [
        {"cursor": "", "withUserTools": False},
        {"cursor": "self.c", "withUserTools": False},
        {"cursor": "self.d", "withUserTools": False},
    ]
    assert [r["id"] for r in device.requests] == [1, 2, 3]


async def test_unusable_and_repeated_tools_are_skipped() -> None:
    device = ScriptedDevice(
        paged(
            {
                "": (
                    [
                        tool("self.a"),
                        "not an object",
                        {"name": ""},
                        {"description": "nameless"},
                        {"name": "self.b", "description": 3, "inputSchema": []},
                        tool("self.a"),
                    ],
                    None,
                )
            }
        )
    )
    tools = await device.client.list_tools()
    assert tools == [
        McpTool("self.a", "self.a tool", {"type": "object"}),
        McpTool("self.b", "", {"type": "object", "properties": {}}),
    ]


async def test_a_repeated_cursor_ends_the_listing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = ScriptedDevice(
        paged({"": ([tool("self.a")], "x"), "x": ([tool("self.b")], "x")})
    )
    tools = await device.client.list_tools()
    assert [t.name for t in tools] == ["self.a", "self.b"]
    assert "repeats the tools/list cursor 'x'" in caplog.text


async def test_endless_pages_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    def respond(payload: dict[str, Any]) -> dict[str, Any]:
        page = int(payload["params"]["cursor"] or 0)
        return result(
            payload, {"tools": [tool(f"t{page}")], "nextCursor": str(page + 1)}
        )

    device = ScriptedDevice(respond)
    tools = await device.client.list_tools()
    assert len(tools) == MAX_TOOL_PAGES
    assert len(device.requests) == MAX_TOOL_PAGES
    assert f"more than {MAX_TOOL_PAGES} pages" in caplog.text


async def test_a_failing_later_page_keeps_the_earlier_tools(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def respond(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["params"]["cursor"]:
            return error(payload, {"message": "Failed to add tool self.big"})
        return result(payload, {"tools": [tool("self.a")], "nextCursor": "self.big"})

    device = ScriptedDevice(respond)
    assert [t.name for t in await device.client.list_tools()] == ["self.a"]
    assert "stopped at page 2: Failed to add tool self.big" in caplog.text


async def test_a_failing_first_page_raises() -> None:
    device = ScriptedDevice(lambda p: result(p, {"tools": "none"}))
    with pytest.raises(McpError, match="no tools list"):
        await device.client.list_tools()


async def test_closing_during_a_later_page_raises() -> None:
    device = ScriptedDevice()
    device.responder = lambda p: (
        result(p, {"tools": [tool("self.a")], "nextCursor": "b"})
        if not p["params"]["cursor"]
        else None
    )
    listing = asyncio.ensure_future(device.client.list_tools())
    while len(device.requests) < 2:
        await asyncio.sleep(0)
    device.client.close()
    with pytest.raises(McpClosedError):
        await listing


@pytest.mark.parametrize(
    ("error_value", "message", "code"),
    [
        ({"message": "Unknown tool: self.x"}, "Unknown tool: self.x", None),
        ({"message": "Method not found", "code": -32601}, "Method not found", -32601),
        ({"message": "odd", "code": True}, "odd", None),
        ({"message": 42}, "device error", None),
        ({}, "device error", None),
        ("boom", "device error: 'boom'", None),
    ],
)
async def test_errors_with_and_without_code(
    error_value: Any, message: str, code: int | None
) -> None:
    device = ScriptedDevice(lambda p: error(p, error_value))
    with pytest.raises(McpError) as raised:
        await device.client.call_tool("self.x", {"a": 1})
    assert str(raised.value) == message
    assert raised.value.code == code
    assert device.requests[0]["params"] == {"name": "self.x", "arguments": {"a": 1}}


@pytest.mark.parametrize(
    "reply",
    [
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "id": 1, "result": ["not", "an", "object"]},
    ],
)
async def test_replies_without_a_result_object_are_errors(
    reply: dict[str, Any],
) -> None:
    device = ScriptedDevice(lambda p: reply)
    with pytest.raises(McpError, match="malformed reply"):
        await device.client.request("tools/list")


async def test_tool_results_are_parsed() -> None:
    device = ScriptedDevice(
        lambda p: result(
            p,
            {
                "content": [
                    {"type": "text", "text": "line 1"},
                    {"type": "image", "data": "..."},
                    "junk",
                    {"type": "text", "text": "line 2"},
                    {"type": "text", "text": 3},
                ],
                "isError": True,
            },
        )
    )
    outcome = await device.client.call_tool("self.camera.take_photo")
    assert outcome.text == "line 1\nline 2"
    assert outcome.is_error
    assert len(outcome.content) == 4
    assert device.requests[0]["params"]["arguments"] == {}

    device.responder = lambda p: result(p, {"content": "text"})
    assert await device.client.call_tool("self.x") == McpToolResult()


async def test_replies_nobody_waits_for_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    device = ScriptedDevice()
    call = asyncio.ensure_future(device.client.call_tool("self.x"))
    while not device.requests:
        await asyncio.sleep(0)
    for stray in (
        {"jsonrpc": "2.0", "id": "1", "result": {}},
        {"jsonrpc": "2.0", "id": True, "result": {}},
        {"jsonrpc": "2.0", "id": 77, "result": {}},
        {"jsonrpc": "2.0", "result": {}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
    ):
        device.client.handle_message(stray)
    assert not call.done()
    assert device.client.pending == 1
    # A float id equal to ours is still ours (JSON numbers have no int type).
    device.client.handle_message(
        {"jsonrpc": "2.0", "id": 1.0, "result": {"content": []}}
    )
    assert await call == McpToolResult()
    assert "no request waits for it" in caplog.text
    assert "Ignoring MCP 'notifications/progress'" in caplog.text


async def test_timeouts_are_clean_and_late_replies_ignored() -> None:
    device = ScriptedDevice()
    with pytest.raises(
        McpTimeoutError, match=r"tools/call got no reply within 0\.01 s"
    ):
        await device.client.call_tool("self.slow", reply_timeout=0.01)
    assert device.client.pending == 0
    device.client.handle_message({"jsonrpc": "2.0", "id": 1, "result": {}})
    device.responder = lambda p: result(p, {"content": []})
    assert await device.client.call_tool("self.fast") == McpToolResult()
    assert device.requests[-1]["id"] == 2


async def test_a_reply_racing_a_cancelled_request_is_harmless() -> None:
    device = ScriptedDevice()
    call = asyncio.ensure_future(device.client.call_tool("self.x"))
    while not device.requests:
        await asyncio.sleep(0)
    call.cancel()
    device.client.handle_message({"jsonrpc": "2.0", "id": 1, "result": {}})
    with pytest.raises(asyncio.CancelledError):
        await call
    assert device.client.pending == 0


async def test_close_fails_waiting_calls_and_refuses_new_ones() -> None:
    device = ScriptedDevice()
    call = asyncio.ensure_future(device.client.call_tool("self.x"))
    while not device.requests:
        await asyncio.sleep(0)
    device.client.close()
    with pytest.raises(McpClosedError, match="session ended"):
        await call
    with pytest.raises(McpClosedError):
        await device.client.request("tools/list")
    with pytest.raises(McpClosedError):
        await device.client.notify("notifications/initialized")


async def test_send_failures_become_closed_errors() -> None:
    device = ScriptedDevice()
    device.fail_send = True
    with pytest.raises(McpClosedError, match="cannot send tools/list: socket gone"):
        await device.client.request("tools/list")
    with pytest.raises(McpClosedError, match="cannot send notifications/x"):
        await device.client.notify("notifications/x")
    assert device.client.pending == 0


async def test_close_during_a_failing_send_leaves_no_unretrieved_error() -> None:
    device = ScriptedDevice()

    async def close_then_fail(payload: dict[str, Any]) -> None:
        device.client.close()
        raise ConnectionError("gone")

    device.client._send = close_then_fail
    with pytest.raises(McpClosedError):
        await device.client.request("initialize")


def test_request_ids_wrap_within_a_c_int() -> None:
    client = McpClient(ScriptedDevice().send, client=CLIENT)
    client._next_id = mcp._MAX_REQUEST_ID - 1
    assert client._new_id() == mcp._MAX_REQUEST_ID
    assert client._new_id() == 1


def test_helpers() -> None:
    assert response_id(3) == 3
    assert response_id(3.0) == 3
    assert response_id(3.5) is None
    assert response_id("3") is None
    assert response_id(False) is None
    assert response_id(None) is None
    assert parse_tool(None) is None
    assert McpToolResult(({"type": "text", "text": "a"},)).text == "a"


async def test_close_racing_a_cancelled_request_is_harmless() -> None:
    device = ScriptedDevice()
    call = asyncio.ensure_future(device.client.call_tool("self.x"))
    while not device.requests:
        await asyncio.sleep(0)
    call.cancel()
    device.client.close()
    with pytest.raises(asyncio.CancelledError):
        await call


def test_tools_with_overlong_names_are_unusable() -> None:
    longest = "t" * mcp.MAX_TOOL_NAME_CHARS
    tool = parse_tool({"name": longest})
    assert tool is not None
    assert tool.name == longest
    assert parse_tool({"name": longest + "t"}) is None
