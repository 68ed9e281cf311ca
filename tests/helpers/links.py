"""Device links without a socket: the WebSocket transport over a recording connection.

Also a transport whose connection outlives its voice sessions, as MQTT's will.
"""

import asyncio
from collections.abc import AsyncGenerator, Callable
import json
from typing import Any, cast

from aiohttp import WSMessage
import pytest

from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.device.link import DeviceLink
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.protocol.codec import OpusEncoder
from custom_components.xiaozhi.protocol.messages import Hello
from custom_components.xiaozhi.transport.base import EndReason
from custom_components.xiaozhi.transport.websocket import (
    WebSocketConnection,
    WebSocketTransport,
)
from tests.helpers.devices import MAC, tone


class RecordingConnection:
    """Records what the WebSocket transport puts on the wire; sends can be blocked or made to fail."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None
        self.binary_gate: asyncio.Event | None = None
        self.binary_waiting = asyncio.Event()
        self.error: Exception | None = None

    async def send_text(self, text: str) -> None:
        if self.error is not None:
            raise self.error
        self.sent.append(("json", json.loads(text)))

    async def send_binary(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        if self.binary_gate is not None:
            self.binary_waiting.set()
            await self.binary_gate.wait()
        self.sent.append(("binary", data))

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [item for kind, item in self.sent if kind == "json"]

    @property
    def frames(self) -> list[bytes]:
        return [item for kind, item in self.sent if kind == "binary"]

    def kinds(self) -> list[str]:
        """Each item as "binary" or the JSON message's type/state."""
        return [
            kind if kind == "binary" else item.get("state", item["type"])
            for kind, item in self.sent
        ]


type LinkFactory = Callable[..., DeviceLink]


@pytest.fixture
async def make_link(hass: HomeAssistant) -> AsyncGenerator[LinkFactory]:
    """Create started links; every one is ended (timers and tasks too) after."""
    made: list[DeviceLink] = []

    def make(*, version: int = 1, runtime: DeviceRuntime | None = None) -> DeviceLink:
        runtime = runtime or DeviceRuntime(MAC)
        connection = cast(WebSocketConnection, RecordingConnection())
        transport = WebSocketTransport(
            connection, protocol_version=version, name="Kitchen"
        )
        link = DeviceLink(hass, runtime, transport, mac=MAC, name="Kitchen")
        runtime.async_attach(link)
        link.start()
        made.append(link)
        return link

    yield make
    for link in made:
        await link.async_close("test over")


def transport_of(owner: DeviceLink | DeviceSession) -> RecordingConnection:
    """The recording connection under a link (or a session's link)."""
    link = owner.link if isinstance(owner, DeviceSession) else owner
    transport = link.transport
    assert isinstance(transport, WebSocketTransport)
    connection = transport._connection
    assert isinstance(connection, RecordingConnection)
    return connection


async def say_hello(link: DeviceLink, **features: Any) -> DeviceSession:
    await link.async_handle_message(Hello(version=1, features=features))
    assert link.session is not None
    return link.session


class Scripted:
    """Yields prepared messages, as ``async for message in ws`` does."""

    def __init__(self, messages: list[WSMessage]) -> None:
        self.messages = messages

    def __aiter__(self) -> Scripted:
        return self

    async def __anext__(self) -> WSMessage:
        if not self.messages:
            raise StopAsyncIteration
        return self.messages.pop(0)


def opus_packets(count: int) -> list[bytes]:
    encoder = OpusEncoder(24000, 60)
    return encoder.encode(tone(500, 24000, count * 0.06))


class LastingTransport:
    """A connection that outlives its voice sessions, as MQTT's does."""

    session_ends_connection = False

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.audio: list[bytes] = []
        self.closed_with: tuple[EndReason, str] | None = None
        self.sent = asyncio.Event()
        self.sessions_ended = 0

    def server_hello_fields(self) -> dict[str, Any]:
        return {"transport": "udp", "version": 3, "udp": {"port": 8884}}

    def session_ended(self) -> None:
        self.sessions_ended += 1

    def diagnostics(self) -> dict[str, Any]:
        return {}

    async def send_text(self, text: str) -> None:
        self.messages.append(json.loads(text))
        self.sent.set()

    async def send_audio(self, packet: bytes) -> None:
        self.audio.append(packet)

    async def close(self, reason: EndReason, detail: str) -> None:
        self.closed_with = (reason, detail)

    async def next_type(self, message_type: str) -> dict[str, Any]:
        while not any(m["type"] == message_type for m in self.messages):
            self.sent.clear()
            await self.sent.wait()
        return next(m for m in self.messages if m["type"] == message_type)


@pytest.fixture
async def lasting_link(hass: HomeAssistant) -> AsyncGenerator[DeviceLink]:
    runtime = DeviceRuntime(MAC)
    link = DeviceLink(
        hass, runtime, LastingTransport(), mac=MAC, name="Kitchen", hello_timeout=None
    )
    runtime.async_attach(link)
    link.start()
    yield link
    await link.async_close("test over")


def lasting_transport(link: DeviceLink) -> LastingTransport:
    transport = link.transport
    assert isinstance(transport, LastingTransport)
    return transport
