"""MCP client over the Xiaozhi channel: the device serves tools, we call them.

The device is the MCP server and Home Assistant the client; JSON-RPC 2.0 objects
travel inside ``{"type": "mcp", "payload": ...}`` messages. The firmware
(main/mcp_server.cc, docs/mcp-protocol.md) has quirks a generic MCP client trips
over, all handled here:

* request ids must be JSON numbers (string ids are dropped silently), so ids are
  small increasing integers;
* error objects carry only ``message``, no ``code``;
* methods starting with ``notifications`` are ignored (sending them is harmless);
* ``tools/list`` is paged at about 8 kB: ``nextCursor`` names the first tool of the
  next page and is absent (or empty) on the last one;
* ``tools/call`` replies asynchronously, after the tool ran on the device.

No Home Assistant and no I/O here: the device's link hands in a ``send``
coroutine and who the client is, and feeds every incoming payload to
:meth:`McpClient.handle_message`.
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
import logging
from typing import Any, Final

from .sanitize import printable

_LOGGER = logging.getLogger(__name__)

MCP_PROTOCOL_VERSION: Final = "2024-11-05"
# initialize and each tools/list page.
DEFAULT_REQUEST_TIMEOUT_S: Final = 10.0
# A tool runs on the device's main loop; some (taking a photo) take seconds.
DEFAULT_TOOL_TIMEOUT_S: Final = 30.0
# The firmware pages at 8 kB: 32 pages is far more tools than any board has, and
# bounds a device that keeps answering with new cursors.
MAX_TOOL_PAGES: Final = 32
# Tools kept of one listing, and the longest tool name: a board has a few dozen
# tools named like ``self.audio_speaker.set_volume``; a device that lists more or
# longer ones is cut here, before anything is kept or shown.
MAX_TOOLS: Final = 256
MAX_TOOL_NAME_CHARS: Final = 128
# The firmware reads ids as C ints.
_MAX_REQUEST_ID: Final = 2**31 - 1
_EMPTY_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


class McpError(Exception):
    """The device answered with an error, or the call could not complete.

    Attributes:
        code: The JSON-RPC error code, when the device sent one (the firmware
            never does).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        """Keep the message and the optional code."""
        super().__init__(message)
        self.code = code


class McpTimeoutError(McpError):
    """The device did not answer in time."""


class McpClosedError(McpError):
    """The session ended before the device answered."""


@dataclass(frozen=True, slots=True)
class McpTool:
    """A tool the device serves.

    Attributes:
        name: The tool name, e.g. ``self.audio_speaker.set_volume``.
        description: What the tool does, for the language model.
        input_schema: JSON schema of the arguments.
        user_only: The device marks it for its user, not for a language model
            (``annotations.audience == ["user"]``: reboot, firmware upgrade).
    """

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_SCHEMA)
    user_only: bool = False


@dataclass(frozen=True, slots=True)
class McpClientInfo:
    """Who calls the device's tools, as ``initialize`` tells the device."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class McpServerInfo:
    """What the device said about itself in its ``initialize`` reply."""

    name: str = ""
    version: str = ""
    protocol_version: str = ""


@dataclass(frozen=True, slots=True)
class McpToolResult:
    """The result of a tool call.

    Attributes:
        content: The content items as sent (``{"type": "text", "text": ...}``, or
            ``image`` items from a camera).
        is_error: The tool itself reported failure (the call still completed).
    """

    content: tuple[Mapping[str, Any], ...] = ()
    is_error: bool = False

    @property
    def text(self) -> str:
        """Return the text items joined by newlines."""
        return "\n".join(
            item["text"]
            for item in self.content
            if item.get("type") == "text" and isinstance(item.get("text"), str)
        )


def request_payload(
    request_id: int | None, method: str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build a JSON-RPC request (or a notification when ``request_id`` is None)."""
    payload: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        payload["params"] = dict(params)
    if request_id is not None:
        payload["id"] = request_id
    return payload


def response_id(value: Any) -> int | None:
    """Return the numeric id of a reply, or None when it cannot be one of ours."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_error(error: Any) -> McpError:
    """Turn a JSON-RPC ``error`` member into an exception; ``code`` is optional."""
    if not isinstance(error, Mapping):
        return McpError(f"device error: {error!r}")
    message = error.get("message")
    code = error.get("code")
    return McpError(
        message if isinstance(message, str) and message else "device error",
        code if isinstance(code, int) and not isinstance(code, bool) else None,
    )


def parse_tool(item: Any) -> McpTool | None:
    """Return the tool described by one ``tools/list`` entry, None if unusable."""
    if not isinstance(item, Mapping):
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_TOOL_NAME_CHARS:
        return None
    description = item.get("description")
    schema = item.get("inputSchema")
    return McpTool(
        name=name,
        description=description if isinstance(description, str) else "",
        input_schema=schema if isinstance(schema, Mapping) else _EMPTY_SCHEMA,
        user_only=_for_user_only(item.get("annotations")),
    )


def _for_user_only(annotations: Any) -> bool:
    """Return whether MCP annotations address the tool to the user alone."""
    if not isinstance(annotations, Mapping):
        return False
    audience = annotations.get("audience")
    return isinstance(audience, list) and audience == ["user"]


def parse_tool_result(result: Mapping[str, Any]) -> McpToolResult:
    """Return a ``tools/call`` result; content items that are not objects are dropped."""
    content = result.get("content")
    items = (
        tuple(item for item in content if isinstance(item, Mapping))
        if isinstance(content, list)
        else ()
    )
    return McpToolResult(content=items, is_error=result.get("isError") is True)


def parse_server_info(result: Mapping[str, Any]) -> McpServerInfo:
    """Return the server description of an ``initialize`` result."""
    info = result.get("serverInfo")
    info = info if isinstance(info, Mapping) else {}
    name, version = info.get("name"), info.get("version")
    protocol = result.get("protocolVersion")
    return McpServerInfo(
        name=name if isinstance(name, str) else "",
        version=version if isinstance(version, str) else "",
        protocol_version=protocol if isinstance(protocol, str) else "",
    )


type SendPayload = Callable[[dict[str, Any]], Awaitable[None]]


class McpClient:
    """The client side of one device's MCP channel.

    ``send`` delivers one JSON-RPC object to the device and raises
    :class:`ConnectionError` when it cannot. Replies are matched to requests by id;
    replies with an id we are not waiting for (late after a timeout, string ids,
    ids of a previous session) are logged and dropped.
    """

    def __init__(
        self, send: SendPayload, *, client: McpClientInfo, name: str = "device"
    ) -> None:
        """Create a client; ``name`` identifies the device in log lines."""
        self._send = send
        self._client = client
        self._name = name
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Mapping[str, Any]]] = {}
        self._closed = False
        self.server_info: McpServerInfo | None = None

    @property
    def pending(self) -> int:
        """Return how many requests are waiting for a reply."""
        return len(self._pending)

    def _new_id(self) -> int:
        self._next_id = self._next_id % _MAX_REQUEST_ID + 1
        return self._next_id

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        reply_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> Mapping[str, Any]:
        """Send a request and return its ``result`` object.

        Raises:
            McpError: The device answered with an error or a malformed reply.
            McpTimeoutError: No reply within ``reply_timeout`` seconds.
            McpClosedError: The channel is closed or closed while waiting.
        """
        if self._closed:
            raise McpClosedError("the device's MCP channel is closed")
        request_id = self._new_id()
        future: asyncio.Future[Mapping[str, Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request_id] = future
        try:
            try:
                await self._send(request_payload(request_id, method, params))
            except ConnectionError as err:
                raise McpClosedError(f"cannot send {method}: {err}") from err
            try:
                async with asyncio.timeout(reply_timeout):
                    return await future
            except TimeoutError:
                raise McpTimeoutError(
                    f"{method} got no reply within {reply_timeout:g} s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved here when the send failed after close

    async def notify(
        self, method: str, params: Mapping[str, Any] | None = None
    ) -> None:
        """Send a notification (no reply expected).

        Raises:
            McpClosedError: The channel is closed.
        """
        if self._closed:
            raise McpClosedError("the device's MCP channel is closed")
        try:
            await self._send(request_payload(None, method, params))
        except ConnectionError as err:
            raise McpClosedError(f"cannot send {method}: {err}") from err

    def handle_message(self, payload: Mapping[str, Any]) -> None:
        """Take one JSON-RPC object from the device: resolve the request it answers."""
        if "method" in payload:
            # The device serves; it sends no requests or notifications of its own.
            _LOGGER.debug(
                "Ignoring MCP %s from %s",
                printable(repr(payload.get("method")), 64),
                self._name,
            )
            return
        raw_id = payload.get("id")
        request_id = response_id(raw_id)
        future = None if request_id is None else self._pending.pop(request_id, None)
        if future is None:
            _LOGGER.debug(
                "Dropping MCP reply from %s with id %s: no request waits for it",
                self._name,
                printable(repr(raw_id), 64),
            )
            return
        if future.done():
            return
        if "error" in payload:
            future.set_exception(parse_error(payload["error"]))
        elif isinstance(payload.get("result"), Mapping):
            future.set_result(payload["result"])
        else:
            future.set_exception(McpError("malformed reply: no result object"))

    async def initialize(
        self,
        *,
        capabilities: Mapping[str, Any] | None = None,
        reply_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> McpServerInfo:
        """Open the MCP session; returns (and keeps) what the device says of itself.

        ``capabilities`` are what we offer the device; the firmware reads
        ``vision`` (``url`` and ``token`` of the endpoint its camera posts to).
        """
        result = await self.request(
            "initialize",
            {
                "protocolVersion": MCP_PROTOCOL_VERSION,
                "capabilities": dict(capabilities or {}),
                "clientInfo": {
                    "name": self._client.name,
                    "version": self._client.version,
                },
            },
            reply_timeout=reply_timeout,
        )
        self.server_info = parse_server_info(result)
        await self.notify("notifications/initialized")
        return self.server_info

    async def list_tools(
        self, *, reply_timeout: float = DEFAULT_REQUEST_TIMEOUT_S
    ) -> list[McpTool]:
        """Return every tool the device offers, following ``nextCursor``.

        Unusable entries and repeated names are skipped. When a page after the first
        fails, the tools of the earlier pages are returned (and the failure logged).

        Raises:
            McpError: The first page failed (subclasses as for :meth:`request`).
        """
        tools: dict[str, McpTool] = {}
        cursor = ""
        seen_cursors: set[str] = set()
        for page in range(MAX_TOOL_PAGES):
            try:
                result = await self.request(
                    "tools/list",
                    {"cursor": cursor, "withUserTools": False},
                    reply_timeout=reply_timeout,
                )
                cut = self._add_tools(tools, result)
            except McpError as err:
                if page == 0 or isinstance(err, McpClosedError):
                    raise
                _LOGGER.warning(
                    "Listing the tools of %s stopped at page %d: %s",
                    self._name,
                    page + 1,
                    printable(err),
                )
                return list(tools.values())
            next_cursor = result.get("nextCursor")
            if cut:
                _LOGGER.warning(
                    "%s lists more than %d tools; keeping the first %d",
                    self._name,
                    MAX_TOOLS,
                    MAX_TOOLS,
                )
                return list(tools.values())
            if not isinstance(next_cursor, str) or not next_cursor:
                return list(tools.values())
            if next_cursor in seen_cursors:
                _LOGGER.warning(
                    "%s repeats the tools/list cursor %s; keeping %d tools",
                    self._name,
                    printable(repr(next_cursor), 64),
                    len(tools),
                )
                return list(tools.values())
            seen_cursors.add(next_cursor)
            cursor = next_cursor
        _LOGGER.warning(
            "%s lists tools over more than %d pages; keeping the first %d tools",
            self._name,
            MAX_TOOL_PAGES,
            len(tools),
        )
        return list(tools.values())

    def _add_tools(self, tools: dict[str, McpTool], result: Mapping[str, Any]) -> bool:
        """Add a page's tools; returns whether ``MAX_TOOLS`` cut the listing."""
        items = result.get("tools")
        if not isinstance(items, list):
            raise McpError("malformed tools/list reply: no tools list")
        for item in items:
            if len(tools) >= MAX_TOOLS:
                return True
            tool = parse_tool(item)
            if tool is None:
                _LOGGER.debug(
                    "Skipping unusable tool from %s: %s",
                    self._name,
                    printable(repr(item)),
                )
            elif tool.name not in tools:
                tools[tool.name] = tool
        return bool(result.get("nextCursor")) and len(tools) >= MAX_TOOLS

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        reply_timeout: float = DEFAULT_TOOL_TIMEOUT_S,
    ) -> McpToolResult:
        """Call one of the device's tools.

        A tool that reports failure returns a result with ``is_error`` set; a call
        the device rejects (unknown tool, missing argument) raises.

        Raises:
            McpError: The device rejected the call (subclasses as for
                :meth:`request`).
        """
        result = await self.request(
            "tools/call",
            {"name": name, "arguments": dict(arguments or {})},
            reply_timeout=reply_timeout,
        )
        return parse_tool_result(result)

    def close(self) -> None:
        """Fail every waiting request and refuse new ones."""
        self._closed = True
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(McpClosedError("the session ended"))
