"""OTA check, activation and pairing through HA's discovery flow, over real HTTP."""

from collections.abc import Awaitable, Callable
from http import HTTPStatus
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
import pytest

from homeassistant.config_entries import (
    SOURCE_INTEGRATION_DISCOVERY,
    ConfigEntry,
    ConfigEntryDisabler,
    ConfigEntryState,
)
from homeassistant.const import CONF_CODE, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.translation import async_get_translations
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import (
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_DEVICE_LANGUAGE,
    CONF_ENTRY_KIND,
    CONF_FIRMWARE_VERSION,
    CONF_MAC,
    DOMAIN,
    ENTRY_KIND_DEVICE,
)
from custom_components.xiaozhi.server.pairing import PairingRegistry
from custom_components.xiaozhi.server.ratelimit import RateLimiter
from custom_components.xiaozhi.server.registry import async_get_server

MAC = "aa:bb:cc:dd:ee:ff"
CLIENT_ID = "2f1f0a6e-8c1b-4c55-9d3c-1c4a9d1b7e00"

type ClientFactory = Callable[[], Awaitable[TestClient[web.Request, web.Application]]]


def firmware_headers(
    mac: str = MAC, client_id: str = CLIENT_ID, language: str = "zh-CN"
) -> dict[str, str]:
    """The headers Ota::SetupHttp sends."""
    return {
        "Activation-Version": "1",
        "Device-Id": mac,
        "Client-Id": client_id,
        "User-Agent": "bread-compact-wifi/1.9.2",
        "Accept-Language": language,
        "Content-Type": "application/json",
    }


def firmware_body(mac: str = MAC) -> dict[str, Any]:
    """An excerpt of Board::GetSystemInfoJson."""
    return {
        "version": 2,
        "language": "zh-CN",
        "flash_size": 16777216,
        "minimum_free_heap_size": "8234567",
        "mac_address": mac,
        "uuid": CLIENT_ID,
        "chip_model_name": "esp32s3",
        "application": {"name": "xiaozhi", "version": "1.9.2"},
        "board": {"type": "bread-compact-wifi", "name": "bread-compact-wifi"},
    }


@pytest.fixture
async def client(
    ha_core: HomeAssistant, hass_client_no_auth: ClientFactory
) -> TestClient[web.Request, web.Application]:
    assert await async_setup_component(ha_core, DOMAIN, {})
    return await hass_client_no_auth()


async def check_in(
    client: TestClient[web.Request, web.Application], **headers: str
) -> dict[str, Any]:
    response = await client.post(
        "/xiaozhi/ota/", headers=firmware_headers(**headers), json=firmware_body()
    )
    assert response.status == HTTPStatus.OK
    return dict(await response.json())


def pairing_flows(hass: HomeAssistant) -> list[Any]:
    return [
        flow
        for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"]["source"] == SOURCE_INTEGRATION_DISCOVERY
    ]


async def pair(hass: HomeAssistant, code: str) -> Any:
    await hass.async_block_till_done()
    (flow,) = pairing_flows(hass)
    return await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_CODE: code}
    )


def device_entry(hass: HomeAssistant) -> ConfigEntry:
    entry = hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, MAC)
    assert entry is not None
    return entry


async def test_unknown_device_gets_a_code_then_pairs_and_gets_its_websocket(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    answer = await check_in(client)
    assert "mqtt" not in answer
    # A token that opens only a pairing session (server/pairing_session.py), for
    # clients that connect with their first answer's settings.
    port = client.server.port
    pairing_token = answer["websocket"]["token"]
    assert answer["websocket"] == {
        "url": f"ws://127.0.0.1:{port}/xiaozhi/v1/",
        "token": pairing_token,
        "version": 1,
    }
    assert len(pairing_token) >= 32
    activation = answer["activation"]
    assert len(activation["code"]) == 6
    assert activation["code"].isdigit()
    assert activation["challenge"]
    assert activation["message"].startswith("请")
    assert 0 < activation["timeout_ms"] <= 600_000
    assert answer["firmware"] == {"version": "1.9.2", "url": ""}
    assert set(answer["server_time"]) == {"timestamp", "timezone_offset"}

    # Checking in again keeps the code the device is speaking; one flow only.
    again = await check_in(client)
    assert again["activation"]["code"] == activation["code"]
    assert again["websocket"]["token"] == pairing_token
    await ha_core.async_block_till_done()
    (flow,) = pairing_flows(ha_core)
    assert flow["context"]["title_placeholders"] == {"mac": MAC}
    assert flow["step_id"] == "pair"

    response = await client.post("/xiaozhi/ota/activate", headers=firmware_headers())
    assert response.status == HTTPStatus.ACCEPTED

    wrong = "000000" if activation["code"] != "000000" else "111111"
    result = await pair(ha_core, wrong)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {CONF_CODE: "invalid_code"}

    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CODE: activation["code"]}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "bread-compact-wifi ddeeff"
    # HA's satellite wizard opens next: the user is told to wake the device.
    assert result["description"] == "paired"
    assert result["description_placeholders"] == {"device": result["title"]}
    for language, wake in (("en", "wake word"), ("zh-Hans", "唤醒词")):
        texts = await async_get_translations(ha_core, language, "config", [DOMAIN])
        assert wake in texts[f"component.{DOMAIN}.config.create_entry.paired"]
    entry = device_entry(ha_core)
    assert entry.data[CONF_ENTRY_KIND] == ENTRY_KIND_DEVICE
    assert entry.data[CONF_CLIENT_ID] == CLIENT_ID
    assert entry.data[CONF_BOARD] == "bread-compact-wifi"
    assert entry.data[CONF_FIRMWARE_VERSION] == "1.9.2"
    assert entry.data[CONF_DEVICE_LANGUAGE] == "zh-CN"
    # The pairing token becomes the device's: a client reconnecting with it gets in.
    assert entry.data[CONF_TOKEN] == pairing_token

    # The firmware's activation poll now succeeds (POST with an HMAC body).
    response = await client.post(
        "/xiaozhi/ota/activate",
        headers=firmware_headers(),
        json={
            "algorithm": "hmac-sha256",
            "serial_number": "SN1",
            "challenge": activation["challenge"],
            "hmac": "00" * 32,
        },
    )
    assert response.status == HTTPStatus.OK

    # Until its entry is loaded, the device is told to keep waiting.
    await ha_core.config_entries.async_set_disabled_by(
        entry.entry_id, ConfigEntryDisabler.USER
    )
    await ha_core.async_block_till_done()
    response = await client.post("/xiaozhi/ota/activate", headers=firmware_headers())
    assert response.status == HTTPStatus.ACCEPTED
    await ha_core.config_entries.async_set_disabled_by(entry.entry_id, None)
    await ha_core.async_block_till_done()

    answer = await check_in(client)
    assert "activation" not in answer
    assert "mqtt" not in answer
    assert answer["websocket"] == {
        "url": f"ws://127.0.0.1:{port}/xiaozhi/v1/",
        "token": entry.data[CONF_TOKEN],
        "version": 1,
    }


async def test_token_only_for_the_paired_client_id_and_repairing_rotates_it(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    code = (await check_in(client))["activation"]["code"]
    await pair(ha_core, code)
    old_token = device_entry(ha_core).data[CONF_TOKEN]

    # Same MAC, another Client-Id (NVS erased, or someone spoofing the MAC).
    answer = await check_in(client, client_id="another-uuid")
    assert answer["websocket"]["token"] != old_token
    assert old_token not in json.dumps(answer)
    new_code = answer["activation"]["code"]
    result = await pair(ha_core, new_code)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "repaired"
    await ha_core.async_block_till_done()
    entry = device_entry(ha_core)
    assert entry.data[CONF_CLIENT_ID] == "another-uuid"
    assert entry.data[CONF_TOKEN] != old_token
    assert len(ha_core.config_entries.async_entries(DOMAIN)) == 1


async def test_too_many_wrong_codes_end_the_pairing(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    code = (await check_in(client))["activation"]["code"]
    wrong = "000000" if code != "000000" else "111111"
    result = await pair(ha_core, wrong)
    for _ in range(3):
        result = await ha_core.config_entries.flow.async_configure(
            result["flow_id"], {CONF_CODE: wrong}
        )
        assert result["errors"] == {CONF_CODE: "invalid_code"}
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"], {CONF_CODE: wrong}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "code_expired"
    response = await client.post("/xiaozhi/ota/activate", headers=firmware_headers())
    assert response.status == HTTPStatus.NOT_FOUND


async def test_expired_code_aborts(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    now = [0.0]
    async_get_server(ha_core).pairings = PairingRegistry(ttl=60, clock=lambda: now[0])
    code = (await check_in(client))["activation"]["code"]
    now[0] = 61.0
    result = await pair(ha_core, code)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "code_expired"


async def test_a_paired_device_is_not_offered_again(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    await pair(ha_core, (await check_in(client))["activation"]["code"])
    result = await ha_core.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_INTEGRATION_DISCOVERY},
        data={CONF_MAC: MAC, CONF_CLIENT_ID: CLIENT_ID},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_pending_pairings_are_bounded(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    async_get_server(ha_core).pairings = PairingRegistry(max_pending=1)
    await check_in(client)
    response = await client.post(
        "/xiaozhi/ota/",
        headers=firmware_headers(mac="11:22:33:44:55:66", language="en-US"),
    )
    assert response.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert "try again later" in (await response.json())["message"]


async def test_firmware_update_info_is_kept_current(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    await pair(ha_core, (await check_in(client))["activation"]["code"])
    headers = firmware_headers() | {"User-Agent": "bread-compact-wifi/2.0.0"}
    response = await client.get("/xiaozhi/ota", headers=headers)
    assert response.status == HTTPStatus.OK
    assert "websocket" in await response.json()
    entry = device_entry(ha_core)
    assert entry.data[CONF_FIRMWARE_VERSION] == "2.0.0"
    await ha_core.async_block_till_done()
    device = dr.async_get(ha_core).async_get_device_by_identifier(
        (DOMAIN, MAC), entry.entry_id
    )
    assert device is not None
    assert device.sw_version == "2.0.0"
    assert device.model == "bread-compact-wifi"
    assert (dr.CONNECTION_NETWORK_MAC, MAC) in device.connections
    # A data refresh is not a reload: a connected device keeps its session.
    assert entry.state is ConfigEntryState.LOADED


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, b""),
        ({"Device-Id": "not-a-mac", "Client-Id": CLIENT_ID}, b""),
        ({"Device-Id": MAC}, b"{}"),
    ],
)
async def test_check_in_without_identity_is_rejected(
    client: TestClient[web.Request, web.Application],
    headers: dict[str, str],
    body: bytes,
) -> None:
    response = await client.post("/xiaozhi/ota/", headers=headers, data=body)
    assert response.status == HTTPStatus.BAD_REQUEST
    response = await client.post("/xiaozhi/ota/activate", headers=headers, data=body)
    assert response.status == HTTPStatus.BAD_REQUEST


async def test_other_clients_variants_are_understood(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    # Identity as query parameters and in a {"Payload": ...} wrapper, MAC in dashes.
    body = {"Payload": {"uuid": CLIENT_ID, "application": {"version": "0.3"}}}
    response = await client.post("/xiaozhi/ota/?device-id=AA-BB-CC-DD-EE-FF", json=body)
    assert response.status == HTTPStatus.OK
    answer = await response.json()
    assert answer["firmware"]["version"] == "0.3"
    assert answer["activation"]["message"].startswith("Open Home Assistant")
    await ha_core.async_block_till_done()
    assert pairing_flows(ha_core)[0]["context"]["unique_id"] == MAC


async def test_garbage_and_oversize_bodies(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post(
        "/xiaozhi/ota/", headers=firmware_headers(), data=b"{not json"
    )
    assert response.status == HTTPStatus.OK
    response = await client.post(
        "/xiaozhi/ota/", headers=firmware_headers(), data=b"[1, 2]"
    )
    assert response.status == HTTPStatus.OK
    big = b"x" * (17 * 1024)
    for path in ("/xiaozhi/ota/", "/xiaozhi/ota/activate"):
        response = await client.post(path, headers=firmware_headers(), data=big)
        assert response.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


async def test_websocket_url_follows_the_configured_external_url(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    await pair(ha_core, (await check_in(client))["activation"]["code"])
    await ha_core.config.async_update(external_url="https://ha.example.com:8443")
    headers = firmware_headers() | {"Host": "ha.example.com:8443"}
    response = await client.post("/xiaozhi/ota/", headers=headers)
    answer = await response.json()
    assert answer["websocket"]["url"] == "wss://ha.example.com:8443/xiaozhi/v1/"


async def test_flooding_address_gets_429(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    async_get_server(ha_core).http_limiter = RateLimiter(rate=0.01, burst=2)
    assert (await client.get("/xiaozhi/ota/", headers=firmware_headers())).status == 200
    assert (
        await client.post("/xiaozhi/ota/", headers=firmware_headers())
    ).status == 200
    for path in ("/xiaozhi/ota/", "/xiaozhi/ota/activate"):
        response = await client.post(path, headers=firmware_headers())
        assert response.status == HTTPStatus.TOO_MANY_REQUESTS
        assert int(response.headers["Retry-After"]) >= 1
    response = await client.get("/xiaozhi/ota/", headers=firmware_headers())
    assert response.status == HTTPStatus.TOO_MANY_REQUESTS
