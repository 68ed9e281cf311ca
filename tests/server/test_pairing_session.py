"""An unpaired device connected with its check-in token: it hears its code, nothing else.

Over real HTTP and WebSockets: the OTA answer's pairing token, the pairing
session (hello, the code shown and spoken, everything else dropped), its ends,
and every way a pairing token must not get in.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
import logging
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
import pytest

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY
from homeassistant.const import CONF_CODE, CONF_TOKEN, EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import DOMAIN, WEBSOCKET_PATH
from custom_components.xiaozhi.device.messages import device_message
from custom_components.xiaozhi.server.pairing import PairingRegistry
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.transport.websocket import CloseCode
from fake_provider import FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import tone

MAC = "aa:bb:cc:dd:ee:01"
CLIENT_ID = "5a1d9c1e-1111-4c55-9d3c-1c4a9d1b7e00"
TIMEOUT = 20.0

type HaClient = TestClient[web.Request, web.Application]


async def check_in(
    client: HaClient, *, mac: str = MAC, client_id: str = CLIENT_ID
) -> dict[str, Any]:
    response = await client.post(
        "/xiaozhi/ota/",
        headers={
            "Device-Id": mac,
            "Client-Id": client_id,
            "User-Agent": "xiaozhi-sdk/0.5.1",
            "Accept-Language": "en-US",
        },
        json={"application": {"version": "0.5.1"}},
    )
    assert response.status == HTTPStatus.OK
    return dict(await response.json())


@pytest.fixture
async def client(
    ha_core: HomeAssistant,
    hass_client_no_auth: Callable[[], Awaitable[HaClient]],
) -> HaClient:
    assert await async_setup_component(ha_core, DOMAIN, {})
    assert await async_setup_component(ha_core, "image", {})
    return await hass_client_no_auth()


@pytest.fixture
async def unpaired(client: HaClient) -> AsyncIterator[Callable[..., SimulatedDevice]]:
    """Make simulated devices that connect as unpaired clients do."""
    made: list[SimulatedDevice] = []

    def make(token: str, **kwargs: Any) -> SimulatedDevice:
        kwargs.setdefault("mac", MAC)
        kwargs.setdefault("client_id", CLIENT_ID)
        kwargs.setdefault("features", {"mcp": True})
        device = SimulatedDevice(
            client.session, str(client.make_url(WEBSOCKET_PATH)), token=token, **kwargs
        )
        made.append(device)
        return device

    yield make
    for device in made:
        await device.close()


async def tts_until_stop(device: SimulatedDevice) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = await device.next_message("tts", timeout=TIMEOUT)
        messages.append(message)
        if message["state"] == "stop":
            return messages


async def test_the_pairing_token_opens_a_session_that_only_tells_the_code(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
    fake_provider: FakeProvider,
    pipeline: Pipeline,
) -> None:
    answer = await check_in(client)
    code = answer["activation"]["code"]
    device = unpaired(answer["websocket"]["token"])
    await device.open()
    assert device.server_hello is not None
    assert device.server_hello["transport"] == "websocket"

    messages = await tts_until_stop(device)
    assert [m["state"] for m in messages] == ["start", "sentence_start", "stop"]
    assert messages[1]["text"] == f"{device_message('activation', 'en')}: {code}"
    # Spoken by the preferred pipeline's TTS, digit by digit, and heard.
    assert any(" ".join(code) in r.input for r in fake_provider.speech_requests)
    assert device.received_pcm()

    # Nothing else runs: audio and MCP are dropped, no link, no MCP request.
    await device.listen_start("auto")
    await device.send_pcm(tone(440, 16000, 0.5))
    server = async_get_server(ha_core)
    assert MAC not in server.links
    assert device.mcp_requests == []
    assert fake_provider.transcriptions == []
    assert fake_provider.chat_requests == []

    # Woken again (listen start above, or a wake word): the code again.
    again = await tts_until_stop(device)
    assert again[1]["text"] == messages[1]["text"]
    session = server.pairing_sessions.get(MAC)
    assert session is not None
    assert session.times_spoken >= 2

    # The code is typed: the session closes normally, the token is the device's.
    await ha_core.async_block_till_done()
    [flow] = [
        f
        for f in ha_core.config_entries.flow.async_progress_by_handler(DOMAIN)
        if f["context"]["source"] == SOURCE_INTEGRATION_DISCOVERY
    ]
    await ha_core.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_CODE: code}
    )
    close_code, _ = await device.wait_closed()
    assert close_code == CloseCode.NORMAL
    assert MAC not in server.pairing_sessions
    entry = ha_core.config_entries.async_entry_for_domain_unique_id(DOMAIN, MAC)
    assert entry is not None
    assert entry.data[CONF_TOKEN] == answer["websocket"]["token"]
    await ha_core.async_block_till_done()

    # Reconnecting with the same token is the paired device's connection.
    paired = unpaired(answer["websocket"]["token"])
    await paired.open()
    assert MAC in server.links


async def test_without_a_tts_engine_the_code_is_only_shown(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = await check_in(client)
    device = unpaired(answer["websocket"]["token"])
    with caplog.at_level(logging.INFO):
        await device.open()
        messages = await tts_until_stop(device)
    assert answer["activation"]["code"] in messages[1]["text"]
    assert device.received_pcm() == b""
    assert "pairing code is only shown" in caplog.text


@pytest.mark.parametrize(
    "claims",
    [
        {"client_id": "another-client"},  # the token is bound to the claim
        {"mac": "aa:bb:cc:dd:ee:02"},
        {"token": "not-the-token"},
    ],
)
async def test_a_pairing_token_only_opens_its_own_claim(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
    claims: dict[str, str],
) -> None:
    answer = await check_in(client)
    token = claims.pop("token", answer["websocket"]["token"])
    device = unpaired(token, **claims)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await device.connect()
    assert refused.value.status == HTTPStatus.UNAUTHORIZED
    assert not async_get_server(ha_core).pairing_sessions.get(MAC)


async def test_a_void_code_takes_its_token_and_session_with_it(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
) -> None:
    answer = await check_in(client)
    device = unpaired(answer["websocket"]["token"])
    await device.open()

    # Wrong codes use the pairing up: the session ends, its token gets nowhere.
    await ha_core.async_block_till_done()
    [flow] = [
        f
        for f in ha_core.config_entries.flow.async_progress_by_handler(DOMAIN)
        if f["context"]["source"] == SOURCE_INTEGRATION_DISCOVERY
    ]
    wrong = "000000" if answer["activation"]["code"] != "000000" else "111111"
    for _ in range(5):
        result = await ha_core.config_entries.flow.async_configure(
            flow["flow_id"], {CONF_CODE: wrong}
        )
    assert result["reason"] == "code_expired"
    assert (await device.wait_closed())[0] == CloseCode.SERVER_CLOSED
    late = unpaired(answer["websocket"]["token"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await late.connect()
    assert refused.value.status == HTTPStatus.UNAUTHORIZED


async def test_the_session_ends_with_its_code(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
) -> None:
    server = async_get_server(ha_core)
    # Long enough to connect on a loaded machine; the wait is the test's cost.
    server.pairings = PairingRegistry(ttl=5.0)
    answer = await check_in(client)
    device = unpaired(answer["websocket"]["token"])
    await device.open()
    close_code, reason = await device.wait_closed()
    assert close_code == CloseCode.SERVER_CLOSED
    assert "expired" in reason
    assert server.pairings.get(MAC) is None


async def test_a_second_connection_replaces_the_first_and_stop_closes_all(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
) -> None:
    answer = await check_in(client)
    token = answer["websocket"]["token"]
    first = unpaired(token)
    await first.open()
    second = unpaired(token)
    await second.open()
    assert (await first.wait_closed())[0] == CloseCode.REPLACED

    ha_core.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    assert (await second.wait_closed())[0] == CloseCode.SERVER_SHUTDOWN
    assert not async_get_server(ha_core).pairing_sessions.get(MAC)


async def test_no_hello_in_time_ends_the_session(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "custom_components.xiaozhi.server.pairing_session.HELLO_TIMEOUT_S", 0.05
    )
    answer = await check_in(client)
    device = unpaired(answer["websocket"]["token"])
    await device.connect()
    assert (await device.wait_closed())[0] == CloseCode.HELLO_TIMEOUT


async def test_an_unusable_hello_is_refused(
    ha_core: HomeAssistant,
    client: HaClient,
    unpaired: Callable[..., SimulatedDevice],
) -> None:
    answer = await check_in(client)
    device = unpaired(answer["websocket"]["token"])
    await device.connect()
    hello = device.client_hello()
    hello["audio_params"]["format"] = "pcm"
    await device.send_json(hello)
    assert (await device.wait_closed())[0] == CloseCode.PROTOCOL_ERROR
