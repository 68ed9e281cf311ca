"""A simulated Xiaozhi device speaking the firmware's WebSocket protocol.

It behaves as main/protocols/websocket_protocol.cc, protocol.cc, application.cc and
mcp_server.cc of github:78/xiaozhi-esp32 do: the same handshake headers, the same
hello, v1/v2/v3 binary framing both ways, real Opus audio (the integration's
protocol/codec.py), audio played only while Speaking (between ``tts start`` and
``tts stop``, dropped otherwise), and an MCP server with the firmware's quirks
(numeric ids only, errors without ``code``, ``tools/list`` paged by payload size).

Used by the tests and by the command-line simulator: it needs only an
``aiohttp.ClientSession`` and the endpoint URL, nothing from pytest or Home
Assistant.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
import contextlib
from dataclasses import dataclass, field
import inspect
import json
from typing import Any, Final, Protocol

import aiohttp

from custom_components.xiaozhi.protocol import ProtocolError
from custom_components.xiaozhi.protocol.codec import OpusDecoder, OpusEncoder
from custom_components.xiaozhi.protocol.firmware import (
    DOWNLINK_SAMPLE_RATE,
    SERVER_HELLO_TIMEOUT_S,
    UPLINK_SAMPLE_RATE,
)
from custom_components.xiaozhi.protocol.framing import (
    FrameType,
    decode_frame,
    encode_frame,
)

DEFAULT_MAC: Final = "aa:bb:cc:dd:ee:ff"
DEFAULT_CLIENT_ID: Final = "2f1f0a6e-8c1b-4c55-9d3c-1c4a9d1b7e00"
# McpServer::GetToolsList pages at this payload size.
FIRMWARE_TOOLS_PAGE_BYTES: Final = 8000
# Esp32Camera::Explain: the multipart boundary, the file name and what it says
# without an endpoint.
CAMERA_BOUNDARY: Final = "----ESP32_CAMERA_BOUNDARY"
CAMERA_FILE_NAME: Final = "camera.jpg"
CAMERA_NOT_SET: Final = "Image explain URL or token is not set"
CAMERA_UPLOAD_FAILED: Final = "Failed to upload photo"
PHOTO_TOOL: Final = "self.camera.take_photo"
# The firmware's HTTP client waits this long for an answer (esp-ml307 http_client.h).
CAMERA_HTTP_TIMEOUT_S: Final = 30.0

# A tool's callback returns its value, or an awaitable of it (a tool that takes
# time, like the camera's: the firmware runs tools one at a time).
type ToolCallback = Callable[[dict[str, Any]], Any]


class DeviceObserver(Protocol):
    """Watches what a :class:`SimulatedDevice` exchanges (e.g. to print it)."""

    def json_received(self, message: dict[str, Any]) -> None:
        """Handle a JSON message from the server, before the device acts on it."""

    def json_sent(self, message: dict[str, Any]) -> None:
        """Handle a JSON message the device sent."""

    def audio_received(self, packet: bytes, *, played: bool) -> None:
        """Handle an Opus packet from the server; ``played`` while Speaking."""


class ToolCallError(ValueError):
    """A tool refuses its arguments or fails: the device answers a JSON-RPC error."""


class ChannelClosedError(ConnectionError):
    """The server closed the audio channel before answering the hello."""

    def __init__(self, code: int | None, reason: str) -> None:
        """Keep the close code and reason."""
        super().__init__(f"closed with code {code}: {reason or 'no reason given'}")
        self.code = code
        self.reason = reason


@dataclass
class SimTool:
    """A tool the simulated device serves over MCP."""

    name: str
    description: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    callback: ToolCallback | None = None
    user_only: bool = False

    def to_json(self) -> str:
        """Serialise as McpTool::to_json does: required = no default; user-only annotated."""
        schema: dict[str, Any] = {"type": "object", "properties": self.properties}
        required = [
            name
            for name, prop in self.properties.items()
            if not (isinstance(prop, dict) and "default" in prop)
        ]
        if required:
            schema["required"] = required
        tool: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": schema,
        }
        if self.user_only:
            tool["annotations"] = {"audience": ["user"]}
        return json.dumps(tool, separators=(",", ":"), ensure_ascii=False)


@dataclass
class SimCamera:
    """A board's camera (Esp32Camera): takes a photo and asks the server about it.

    Attributes:
        jpeg: The photo every capture returns.
        questions: The question of every photo taken.
        answers: What the server answered each upload (the tool's result).
    """

    jpeg: bytes
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    def tool(self, device: SimulatedDevice) -> SimTool:
        """Return ``self.camera.take_photo`` (AddCommonTools adds it with a camera)."""

        async def take_photo(arguments: dict[str, Any]) -> str:
            question = arguments.get("question")
            if not isinstance(question, str):
                raise ToolCallError("Missing valid argument: question")
            self.questions.append(question)
            answer = await device.upload_photo(self.jpeg, question)
            self.answers.append(answer)
            return answer

        return SimTool(
            PHOTO_TOOL,
            "Take a photo with the camera and answer a question about it. Use it"
            " when the user asks what you see, or to look at something.",
            {"question": {"type": "string"}},
            callback=take_photo,
        )


def _json_value(kind: object, value: Any) -> Any:
    """Return ``value`` as the firmware reads a property of ``kind``; None if it does not."""
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind == "integer" and isinstance(value, int | float):
        return int(value)
    if kind == "string" and isinstance(value, str):
        return value
    return None


def firmware_arguments(tool: SimTool, arguments: dict[str, Any]) -> dict[str, Any]:
    """Return the tool's arguments as McpServer::DoToolCall reads them.

    Each property is taken by name when its JSON type matches (numbers are cut to
    integers), else its default; other keys are ignored.

    Raises:
        ToolCallError: A property without default is missing or mistyped, or an
            integer is out of range (the firmware's texts).
    """
    values: dict[str, Any] = {}
    for name, prop in tool.properties.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        value = _json_value(kind, arguments.get(name))
        if value is not None:
            values[name] = value
        elif isinstance(prop, dict) and "default" in prop:
            values[name] = prop["default"]
            continue
        else:
            raise ToolCallError(f"Missing valid argument: {name}")
        if kind == "integer":
            _check_range(values[name], prop)
    return values


def _check_range(value: int, prop: dict[str, Any]) -> None:
    if "minimum" in prop and value < prop["minimum"]:
        raise ToolCallError(f"Value is below minimum allowed: {prop['minimum']}")
    if "maximum" in prop and value > prop["maximum"]:
        raise ToolCallError(f"Value exceeds maximum allowed: {prop['maximum']}")


def firmware_result_text(value: Any) -> str:
    """Render a tool's return value as McpTool::Call does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SimulatedDevice:
    """One Xiaozhi device on a real WebSocket connection.

    Typical use: ``await device.open()`` (connect + hello), then ``listen_start``,
    ``send_pcm``, ``listen_stop`` ..., reading what the server sends with
    :meth:`next_message`, :attr:`received_audio` and :meth:`received_pcm`.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        token: str | None,
        mac: str = DEFAULT_MAC,
        client_id: str = DEFAULT_CLIENT_ID,
        protocol_version: int = 1,
        features: dict[str, Any] | None = None,
        frame_duration_ms: int = 60,
        tools: Iterable[SimTool] = (),
        tools_page_bytes: int = FIRMWARE_TOOLS_PAGE_BYTES,
        camera: SimCamera | None = None,
        credentials_in_query: bool = False,
        bearer_prefix: bool = True,
        extra_headers: dict[str, str] | None = None,
        observer: DeviceObserver | None = None,
    ) -> None:
        """Describe the device; nothing is sent before :meth:`connect`."""
        self.http = http
        self.url = url
        self.token = token
        self.mac = mac
        self.client_id = client_id
        self.protocol_version = protocol_version
        self.features = {"mcp": True} if features is None else features
        self.frame_duration_ms = frame_duration_ms
        self.tools = list(tools)
        self.tools_page_bytes = tools_page_bytes
        self.camera = camera
        if camera is not None:
            self.tools.append(camera.tool(self))
        # What the last MCP initialize said about the camera endpoint
        # (capabilities.vision); the firmware keeps it in RAM.
        self.vision_url = ""
        self.vision_token = ""
        # Every tools/call the device received, as (name, arguments).
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []
        self.credentials_in_query = credentials_in_query
        self.bearer_prefix = bearer_prefix
        self.extra_headers = extra_headers or {}
        self.observer = observer
        # Set False to leave MCP requests unanswered (timeouts).
        self.answer_mcp = True
        # An unset event here holds MCP requests until it is set (a device slow
        # to list its tools right after its hello).
        self.hold_mcp: asyncio.Event | None = None
        self.session_id = ""
        self.server_hello: dict[str, Any] | None = None
        self.speaking = False
        self.received_audio: list[bytes] = []
        self.dropped_audio = 0
        # Text that is no JSON object, binary frames that do not parse: the
        # firmware logs and skips them.
        self.bad_messages = 0
        self.mcp_requests: list[dict[str, Any]] = []
        # The type of every JSON message received, in order.
        self.received_types: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._hello_event = asyncio.Event()
        self._hello_received = False
        self._closed = asyncio.Event()
        self._encoder = OpusEncoder(UPLINK_SAMPLE_RATE, frame_duration_ms)
        # Tools that take time run here one at a time, as on the firmware's main
        # loop, while the socket keeps being read.
        self._tool_lock = asyncio.Lock()
        self._tool_tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ connection

    def handshake(self) -> tuple[dict[str, str], dict[str, str]]:
        """Return the headers and query parameters OpenAudioChannel would send."""
        values: dict[str, str] = {
            "Protocol-Version": str(self.protocol_version),
            "Device-Id": self.mac,
            "Client-Id": self.client_id,
        }
        if self.token:
            prefix = "Bearer " if self.bearer_prefix and " " not in self.token else ""
            values["Authorization"] = prefix + self.token
        if self.credentials_in_query:
            return dict(self.extra_headers), {k.lower(): v for k, v in values.items()}
        return {**values, **self.extra_headers}, {}

    async def connect(self) -> None:
        """Open the WebSocket and start reading."""
        headers, params = self.handshake()
        self._ws = await self.http.ws_connect(
            self.url, headers=headers, params=params, autoclose=True
        )
        self._reader = asyncio.create_task(self._read_loop())

    # The tests set their limits per call: these waits take a timeout (ASYNC109).
    async def open(
        self,
        *,
        timeout: float = SERVER_HELLO_TIMEOUT_S,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Connect and exchange hellos; returns the server hello."""
        await self.connect()
        return await self.hello(timeout=timeout)

    def client_hello(self) -> dict[str, Any]:
        """Return the hello GetHelloMessage builds."""
        return {
            "type": "hello",
            "version": self.protocol_version,
            "features": self.features,
            "transport": "websocket",
            "audio_params": {
                "format": "opus",
                "sample_rate": UPLINK_SAMPLE_RATE,
                "channels": 1,
                "frame_duration": self.frame_duration_ms,
            },
        }

    async def hello(
        self,
        *,
        binary: bool = False,
        timeout: float = SERVER_HELLO_TIMEOUT_S,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Send the client hello and wait for the server's (as the firmware does).

        ``binary`` sends it as a JSON binary frame (versions 2 and 3), as some
        clients do.

        Raises:
            ChannelClosedError: The server closed the socket first.
            TimeoutError: No server hello within ``timeout``.
        """
        if self.closed:
            raise ChannelClosedError(self.close_code, self.close_reason)
        self._hello_received = False
        self._hello_event.clear()  # set by the server hello, or by the close
        # Refused at once, the send may fail: the close is on its way.
        with contextlib.suppress(ConnectionError):
            await self.send_json(self.client_hello(), binary=binary)
        async with asyncio.timeout(timeout):
            await self._hello_event.wait()
        if not self._hello_received or self.server_hello is None:
            raise ChannelClosedError(self.close_code, self.close_reason)
        return self.server_hello

    async def close(self) -> None:
        """Drop the connection (CloseAudioChannel) and stop reading."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader
        for task in list(self._tool_tasks):
            task.cancel()
        if self._tool_tasks:
            await asyncio.wait(self._tool_tasks)

    async def wait_closed(
        self,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> tuple[int | None, str]:
        """Wait until the server closes the socket; returns its code and reason."""
        async with asyncio.timeout(timeout):
            await self._closed.wait()
        if self._reader is not None:
            await self._reader
        return self.close_code, self.close_reason

    async def wait_disconnected(self) -> None:
        """Wait, without limit, until the connection is gone."""
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        """Return whether the connection is gone."""
        return self._closed.is_set()

    @property
    def server_sample_rate(self) -> int:
        """Return the downlink Opus rate the server hello announced (else 24 kHz)."""
        params = (self.server_hello or {}).get("audio_params")
        rate = params.get("sample_rate") if isinstance(params, dict) else None
        if isinstance(rate, int) and not isinstance(rate, bool) and rate > 0:
            return rate
        return DOWNLINK_SAMPLE_RATE

    # ------------------------------------------------------------ sending

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse:
        """Return the open WebSocket."""
        assert self._ws is not None, "not connected"
        return self._ws

    async def send_json(self, message: dict[str, Any], *, binary: bool = False) -> None:
        """Send a JSON message: text, or a JSON binary frame (versions 2 and 3)."""
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        if binary:
            await self.ws.send_bytes(
                encode_frame(
                    text.encode(),
                    self.protocol_version,
                    frame_type=FrameType.JSON,
                )
            )
        else:
            await self.ws.send_str(text)
        if self.observer is not None:
            self.observer.json_sent(message)

    def _with_session(self, **message: Any) -> dict[str, Any]:
        return {"session_id": self.session_id, **message}

    async def listen_start(self, mode: str = "auto") -> None:
        """Send listen start (SendStartListening)."""
        await self.send_json(
            self._with_session(type="listen", state="start", mode=mode)
        )

    async def listen_stop(self) -> None:
        """Send listen stop (SendStopListening)."""
        await self.send_json(self._with_session(type="listen", state="stop"))

    async def wake_word(self, text: str) -> None:
        """Send listen detect (SendWakeWordDetected)."""
        await self.send_json(
            self._with_session(type="listen", state="detect", text=text)
        )

    async def abort(self, reason: str | None = None) -> None:
        """Send abort (SendAbortSpeaking), with ``wake_word_detected`` or no reason."""
        message = self._with_session(type="abort")
        if reason is not None:
            message["reason"] = reason
        await self.send_json(message)

    async def send_opus(self, packet: bytes, *, timestamp: int = 0) -> None:
        """Send one Opus packet framed for the connection's version (SendAudio)."""
        await self.ws.send_bytes(
            encode_frame(packet, self.protocol_version, timestamp=timestamp)
        )

    async def send_pcm(self, pcm: bytes) -> int:
        """Encode 16 kHz mono PCM to Opus frames and send them at once; returns the count.

        Each call is one utterance: its tail is padded to a whole frame.
        """
        packets = self._encoder.encode(pcm) + self._encoder.flush()
        for index, packet in enumerate(packets):
            await self.send_opus(packet, timestamp=index * self.frame_duration_ms)
        return len(packets)

    # ------------------------------------------------------------ receiving

    async def next_message(
        self,
        message_type: str | None = None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Return the next JSON message from the server (of a type: others skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._inbox.get()
                if message_type is None or message.get("type") == message_type:
                    return message

    def pending_messages(self) -> list[dict[str, Any]]:
        """Return (and consume) every JSON message received and not yet read."""
        messages = []
        while not self._inbox.empty():
            messages.append(self._inbox.get_nowait())
        return messages

    def received_pcm(self, sample_rate: int | None = None) -> bytes:
        """Decode every Opus packet played so far to mono PCM.

        At ``sample_rate``, by default the downlink rate of the server hello.
        """
        decoder = OpusDecoder(sample_rate or self.server_sample_rate)
        return b"".join(decoder.decode(p) for p in self.received_audio) + (
            decoder.flush()
        )

    async def _read_loop(self) -> None:
        ws = self.ws
        try:
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type is aiohttp.WSMsgType.BINARY:
                    await self._on_binary(message.data)
                else:
                    if message.type is aiohttp.WSMsgType.CLOSE:
                        self.close_reason = message.extra or ""
                    break
        finally:
            self.close_code = ws.close_code
            self._closed.set()
            self._hello_event.set()

    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.bad_messages += 1
            return
        await self._on_json(message)

    async def _on_binary(self, data: bytes) -> None:
        try:
            frame = decode_frame(data, self.protocol_version)
        except ProtocolError:
            self.bad_messages += 1
            return
        if frame.type is FrameType.JSON:
            await self._on_text(frame.payload.decode(errors="replace"))
            return
        # OnIncomingAudio: played only while Speaking.
        if self.observer is not None:
            self.observer.audio_received(frame.payload, played=self.speaking)
        if self.speaking:
            self.received_audio.append(frame.payload)
        else:
            self.dropped_audio += 1

    async def _on_json(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        self.received_types.append(str(kind))
        if self.observer is not None:
            self.observer.json_received(message)
        if kind == "hello":
            if message.get("transport") != "websocket":
                return  # ParseServerHello ignores it
            self.session_id = message.get("session_id") or self.session_id
            self.server_hello = message
            self._hello_received = True
            self._hello_event.set()
            return
        if kind == "tts":
            if message.get("state") == "start":
                self.speaking = True
            elif message.get("state") == "stop":
                self.speaking = False
        if kind == "mcp" and isinstance(message.get("payload"), dict):
            self.mcp_requests.append(message["payload"])
            await self._on_mcp(message["payload"])
            return
        self._inbox.put_nowait(message)

    # ------------------------------------------------------------ MCP server

    async def _on_mcp(self, payload: dict[str, Any]) -> None:
        """Answer as McpServer::ParseMessage does."""
        if payload.get("jsonrpc") != "2.0" or not isinstance(
            payload.get("method"), str
        ):
            return
        method = payload["method"]
        request_id = payload.get("id")
        if method.startswith("notifications") or not self.answer_mcp:
            return
        if self.hold_mcp is not None:
            await self.hold_mcp.wait()
        if isinstance(request_id, bool) or not isinstance(request_id, int | float):
            return  # the firmware drops non-numeric ids silently
        params = payload.get("params")
        if params is not None and not isinstance(params, dict):
            return
        params = params or {}
        request_id = int(request_id)
        if method == "initialize":
            self._remember_vision(params)
            await self.mcp_reply(
                request_id,
                result={
                    "protocolVersion": "2024-11-05",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "sim-board", "version": "1.9.2"},
                },
            )
        elif method == "tools/list":
            await self._list_tools(request_id, params)
        elif method == "tools/call":
            await self._call_tool(request_id, params)
        else:
            await self.mcp_reply(request_id, error=f"Method not implemented: {method}")

    def _remember_vision(self, params: dict[str, Any]) -> None:
        """Keep capabilities.vision's url and token, as McpServer::ParseCapabilities."""
        capabilities = params.get("capabilities")
        vision = capabilities.get("vision") if isinstance(capabilities, dict) else None
        if not isinstance(vision, dict):
            return
        url, token = vision.get("url"), vision.get("token")
        if isinstance(url, str):
            self.vision_url = url
        if isinstance(token, str):
            self.vision_token = token

    async def upload_photo(self, jpeg: bytes, question: str) -> str:
        """Post a photo and its question as Esp32Camera::Explain does; return the answer.

        Chunked multipart (question first, then ``camera.jpg``), with Device-Id,
        Client-Id and, when there is a token, a Bearer Authorization.

        Raises:
            ToolCallError: No endpoint was given, or the server did not answer 200
                (the tool then fails, as on the device).
        """
        if not self.vision_url:
            raise ToolCallError(CAMERA_NOT_SET)
        headers = {
            "Device-Id": self.mac,
            "Client-Id": self.client_id,
            "Content-Type": f"multipart/form-data; boundary={CAMERA_BOUNDARY}",
        }
        if self.vision_token:
            headers["Authorization"] = f"Bearer {self.vision_token}"
        async with self.http.post(
            self.vision_url,
            data=_camera_body(jpeg, question),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=CAMERA_HTTP_TIMEOUT_S),
        ) as response:
            body = await response.text()
            if response.status != 200:
                raise ToolCallError(CAMERA_UPLOAD_FAILED)
        return body

    async def mcp_reply(
        self,
        request_id: Any,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Send one JSON-RPC reply (errors carry no code, as in the firmware)."""
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if error is not None:
            payload["error"] = {"message": error}
        else:
            payload["result"] = result or {}
        await self.send_json(self._with_session(type="mcp", payload=payload))

    async def _list_tools(self, request_id: int, params: dict[str, Any]) -> None:
        cursor = params.get("cursor") if isinstance(params.get("cursor"), str) else ""
        with_user = params.get("withUserTools") is True
        text = '{"tools":['
        next_cursor = ""
        found = not cursor
        for tool in self.tools:
            if not found:
                if tool.name != cursor:
                    continue
                found = True
            if tool.user_only and not with_user:
                continue
            item = tool.to_json() + ","
            if len(text) + len(item) + 30 > self.tools_page_bytes:
                next_cursor = tool.name
                break
            text += item
        text = text.removesuffix(",")
        if text.endswith("[") and self.tools:
            await self.mcp_reply(
                request_id,
                error=f"Failed to add tool {next_cursor} because of payload size limit",
            )
            return
        text += f'],"nextCursor":"{next_cursor}"}}' if next_cursor else "]}"
        await self.mcp_reply(request_id, result=json.loads(text))

    async def _call_tool(self, request_id: int, params: dict[str, Any]) -> None:
        name = params.get("name")
        if not isinstance(name, str):
            await self.mcp_reply(request_id, error="Missing name")
            return
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            await self.mcp_reply(request_id, error="Invalid arguments")
            return
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            await self.mcp_reply(request_id, error=f"Unknown tool: {name}")
            return
        self.tool_calls.append((name, dict(arguments or {})))
        try:
            # Keys the tool does not declare stay visible to its callback (the
            # firmware's tools would not read them).
            values = {**(arguments or {}), **firmware_arguments(tool, arguments or {})}
            value = tool.callback(values) if tool.callback else True
        except ValueError as err:
            await self.mcp_reply(request_id, error=str(err))
            return
        if inspect.isawaitable(value):
            task = asyncio.create_task(self._finish_tool_call(request_id, value))
            self._tool_tasks.add(task)
            task.add_done_callback(self._tool_tasks.discard)
            return
        await self._reply_tool_result(request_id, value)

    async def _finish_tool_call(self, request_id: int, value: Awaitable[Any]) -> None:
        async with self._tool_lock:
            try:
                result = await value
            except ValueError as err:
                with contextlib.suppress(ConnectionError):
                    await self.mcp_reply(request_id, error=str(err))
                return
        with contextlib.suppress(ConnectionError):
            await self._reply_tool_result(request_id, result)

    async def _reply_tool_result(self, request_id: int, value: Any) -> None:
        await self.mcp_reply(
            request_id,
            result={
                "content": [{"type": "text", "text": firmware_result_text(value)}],
                "isError": False,
            },
        )


async def _camera_body(jpeg: bytes, question: str) -> AsyncGenerator[bytes]:
    """The multipart body, streamed (the firmware sends it as it encodes the JPEG)."""
    yield (
        f"--{CAMERA_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="question"\r\n\r\n'
        f"{question}\r\n"
        f"--{CAMERA_BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{CAMERA_FILE_NAME}"'
        "\r\nContent-Type: image/jpeg\r\n\r\n"
    ).encode()
    for start in range(0, len(jpeg), 4096):
        yield jpeg[start : start + 4096]
    yield f"\r\n--{CAMERA_BOUNDARY}--\r\n".encode()
