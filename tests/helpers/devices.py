"""A paired device entry and simulated devices over a real WebSocket, for any test."""

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
import numpy as np
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr

from custom_components.xiaozhi.const import (
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_DEVICE_LANGUAGE,
    CONF_ENTRY_KIND,
    CONF_FIRMWARE_VERSION,
    CONF_MAC,
    DOMAIN,
    ENTRY_KIND_DEVICE,
    WEBSOCKET_PATH,
)
from custom_components.xiaozhi.device.link import DeviceLink
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.protocol.messages import ListenMode
from custom_components.xiaozhi.server.registry import async_get_server
from simulator.device import DEFAULT_CLIENT_ID, DEFAULT_MAC, SimulatedDevice

MAC = DEFAULT_MAC
TOKEN = "Zx8-device-token_0123456789abcdefghij"

type DeviceFactory = Callable[..., SimulatedDevice]


# ---------------------------------------------------------------- helpers


def device_entry_data(mac: str = MAC, token: str = TOKEN) -> dict[str, Any]:
    """Entry data as config_flow._async_pair_device writes it."""
    return {
        CONF_ENTRY_KIND: ENTRY_KIND_DEVICE,
        CONF_MAC: mac,
        CONF_CLIENT_ID: DEFAULT_CLIENT_ID,
        CONF_BOARD: "bread-compact-wifi",
        CONF_FIRMWARE_VERSION: "1.9.2",
        CONF_DEVICE_LANGUAGE: "zh-CN",
        CONF_TOKEN: token,
    }


def make_device_entry(mac: str = MAC, token: str = TOKEN) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title="Kitchen speaker",
        unique_id=mac,
        data=device_entry_data(mac, token),
    )


def tone(freq: float, rate: int, seconds: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


class RecordingHandler:
    """A voice handler that records what the session hands it."""

    def __init__(self, session: DeviceSession, recorder: Recorder) -> None:
        self.session = session
        self.recorder = recorder
        self.audio = bytearray()

    def _record(self, *event: Any) -> None:
        self.recorder.record((*event, self.session))

    def on_connected(self) -> None:
        self._record("connected")

    def on_disconnected(self) -> None:
        self._record("disconnected")

    async def on_listen_start(self, mode: ListenMode) -> None:
        self._record("listen_start", mode)

    async def on_listen_stop(self) -> None:
        self._record("listen_stop", len(self.audio))

    async def on_wake_word(self, text: str) -> None:
        self._record("wake_word", text)

    async def on_abort(self, reason: str | None) -> None:
        self._record("abort", reason)

    def on_audio(self, pcm: bytes) -> None:
        self.audio += pcm


class Recorder:
    """Registered as the device's handler factory; keeps every handler's events."""

    def __init__(self, runtime: DeviceRuntime) -> None:
        self.handlers: list[RecordingHandler] = []
        self.log: list[tuple[Any, ...]] = []
        self._events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.unregister = runtime.async_set_handler_factory(self.create)

    def create(self, session: DeviceSession) -> RecordingHandler:
        handler = RecordingHandler(session, self)
        self.handlers.append(handler)
        return handler

    def record(self, event: tuple[Any, ...]) -> None:
        self.log.append(event)
        self._events.put_nowait(event)

    async def next_event(self, timeout: float = 10.0) -> tuple[Any, ...]:
        """Return the next event without its session."""
        async with asyncio.timeout(timeout):
            event = await self._events.get()
        return event[:-1]


async def wait_until(
    runtime: DeviceRuntime, predicate: Callable[[], bool], timeout: float = 10.0
) -> None:
    """Wait for the runtime's listeners to see ``predicate`` become true."""
    if predicate():
        return
    reached = asyncio.Event()

    def check() -> None:
        if predicate():
            reached.set()

    unsubscribe = runtime.async_add_listener(check)
    try:
        async with asyncio.timeout(timeout):
            await reached.wait()
    finally:
        unsubscribe()


def session_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("xiaozhi ") and not task.done()
    ]


async def assert_link_gone(hass: HomeAssistant, link: DeviceLink) -> None:
    """The link ended, its socket closed, and no task of it is left."""
    await link.async_wait_closed()
    for _ in range(20):
        if not session_tasks():
            break
        await asyncio.sleep(0)
    assert session_tasks() == []
    assert link.closed
    assert async_get_server(hass).links.get(link.mac) is not link
    assert link.runtime.link is not link


async def assert_session_gone(hass: HomeAssistant, session: DeviceSession) -> None:
    """The voice session ended with its link (one socket, one session)."""
    await assert_link_gone(hass, session.link)
    assert session.closed


def registry_device_id(hass: HomeAssistant, mac: str = MAC) -> str:
    """The device registry id of a paired device (what its satellite passes on)."""
    entry = hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, mac)
    assert entry is not None
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, mac), entry.entry_id
    )
    assert device is not None
    return device.id


def runtime_of(entry: MockConfigEntry) -> DeviceRuntime:
    runtime = entry.runtime_data
    assert isinstance(runtime, DeviceRuntime)
    return runtime


@pytest.fixture
async def device_entry(ha_core: HomeAssistant) -> MockConfigEntry:
    entry = make_device_entry()
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    return entry


@pytest.fixture
def runtime(device_entry: MockConfigEntry) -> DeviceRuntime:
    return runtime_of(device_entry)


@pytest.fixture
async def client(
    ha_core: HomeAssistant,
    hass_client_no_auth: Callable[[], Any],
    device_entry: MockConfigEntry,
) -> TestClient[web.Request, web.Application]:
    test_client: TestClient[web.Request, web.Application] = await hass_client_no_auth()
    return test_client


@pytest.fixture
async def devices(
    client: TestClient[web.Request, web.Application],
) -> AsyncGenerator[DeviceFactory]:
    created: list[SimulatedDevice] = []

    def make(**kwargs: Any) -> SimulatedDevice:
        kwargs.setdefault("token", TOKEN)
        device = SimulatedDevice(
            client.session, str(client.make_url(WEBSOCKET_PATH)), **kwargs
        )
        created.append(device)
        return device

    yield make
    for device in created:
        await device.close()


async def until_disconnected(hass: HomeAssistant, mac: str = MAC) -> None:
    """Wait until the server's view for ``mac`` has returned."""
    async with asyncio.timeout(10):
        while mac in async_get_server(hass).links:
            await asyncio.sleep(0.01)
