"""OTA check, activation and pairing through HA's discovery flow, over real HTTP."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
import contextlib
from datetime import timedelta
from http import HTTPStatus
import json
import logging
import random
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

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
from homeassistant.util import dt as dt_util

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
from custom_components.xiaozhi.server import ota
from custom_components.xiaozhi.server.limits import REFUSAL_LOG_BURST
from custom_components.xiaozhi.server.pairing import PairingRegistry
from custom_components.xiaozhi.server.ratelimit import LogThrottle, RateLimiter
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


async def test_a_flood_of_429s_costs_a_few_log_lines(
    ha_core: HomeAssistant,
    client: TestClient[web.Request, web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = async_get_server(ha_core)
    server.http_limiter = RateLimiter(rate=1e-6, burst=1)
    # The default's burst, without its refill: the count holds however slow the run.
    server.refusal_log = LogThrottle(1e-6, REFUSAL_LOG_BURST)
    await client.get("/xiaozhi/ota/", headers=firmware_headers())
    for _ in range(100):
        response = await client.get("/xiaozhi/ota/", headers=firmware_headers())
        assert response.status == HTTPStatus.TOO_MANY_REQUESTS
    lines = [r for r in caplog.records if "Too many device requests" in r.getMessage()]
    assert len(lines) == REFUSAL_LOG_BURST
    assert server.refusal_log.left_out == 100 - REFUSAL_LOG_BURST


# ---------------------------------------------------------------- claim races


async def activate_status(
    client: TestClient[web.Request, web.Application], client_id: str
) -> int:
    response = await client.post(
        "/xiaozhi/ota/activate", headers=firmware_headers(client_id=client_id)
    )
    return response.status


async def test_a_second_claimant_cannot_take_over_a_pending_pairing(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    code = (await check_in(client))["activation"]["code"]
    # Someone else checks in with the device's MAC (it is printed on its sticker).
    intruder = (await check_in(client, client_id="intruder"))["activation"]["code"]
    assert intruder != code
    # The real device keeps its code, and its poll still waits.
    assert (await check_in(client))["activation"]["code"] == code
    assert await activate_status(client, CLIENT_ID) == HTTPStatus.ACCEPTED
    assert await activate_status(client, "intruder") == HTTPStatus.ACCEPTED
    assert await activate_status(client, "nobody") == HTTPStatus.NOT_FOUND
    # A third claimant still fits; a fourth is refused, the first ones stay.
    await check_in(client, client_id="third")
    response = await client.post(
        "/xiaozhi/ota/",
        headers=firmware_headers(client_id="fourth"),
        json=firmware_body(),
    )
    assert response.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert await activate_status(client, CLIENT_ID) == HTTPStatus.ACCEPTED
    # One flow for the MAC; the code the person hears pairs the real device.
    result = await pair(ha_core, code)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert device_entry(ha_core).data[CONF_CLIENT_ID] == CLIENT_ID
    assert await activate_status(client, "intruder") == HTTPStatus.NOT_FOUND
    assert "websocket" in await check_in(client)


async def test_the_code_typed_decides_which_claimant_is_paired(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    await check_in(client)
    second = (await check_in(client, client_id="second"))["activation"]["code"]
    result = await pair(ha_core, second)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert device_entry(ha_core).data[CONF_CLIENT_ID] == "second"


# ---------------------------------------------------------------- flows end


async def test_a_flow_whose_codes_expired_is_aborted(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    now = [0.0]
    async_get_server(ha_core).pairings = PairingRegistry(ttl=60, clock=lambda: now[0])
    await check_in(client)
    now[0] = 30.0
    await check_in(client, client_id="later")
    await ha_core.async_block_till_done()
    assert len(pairing_flows(ha_core)) == 1
    # The first claim expires: the later one still holds the flow open.
    now[0] = 61.0
    async_fire_time_changed(ha_core, dt_util.utcnow() + timedelta(seconds=61))
    await ha_core.async_block_till_done()
    assert len(pairing_flows(ha_core)) == 1
    now[0] = 91.0
    async_fire_time_changed(ha_core, dt_util.utcnow() + timedelta(seconds=91))
    await ha_core.async_block_till_done()
    assert pairing_flows(ha_core) == []


async def test_the_paired_device_checking_in_ends_other_claims(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    await pair(ha_core, (await check_in(client))["activation"]["code"])
    await check_in(client, client_id="intruder")
    await ha_core.async_block_till_done()
    assert len(pairing_flows(ha_core)) == 1
    assert "websocket" in await check_in(client)
    await ha_core.async_block_till_done()
    assert pairing_flows(ha_core) == []
    assert await activate_status(client, "intruder") == HTTPStatus.NOT_FOUND


async def test_no_flow_stays_open_after_wrong_codes_or_pairing(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    code = (await check_in(client))["activation"]["code"]
    await pair(ha_core, code)
    other = "11:22:33:44:55:66"
    response = await client.post(
        "/xiaozhi/ota/", headers=firmware_headers(mac=other, client_id="x")
    )
    assert response.status == HTTPStatus.OK
    await ha_core.async_block_till_done()
    (flow,) = pairing_flows(ha_core)
    for _ in range(5):
        result = await ha_core.config_entries.flow.async_configure(
            flow["flow_id"], {CONF_CODE: "not a code"}
        )
    assert result["type"] is FlowResultType.ABORT
    assert pairing_flows(ha_core) == []


# ---------------------------------------------------------------- forged text

FORGED_LINE = "2026-12-02 05:00:00.000 ERROR (MainThread) [homeassistant.core] forged"


async def test_device_supplied_strings_cannot_forge_log_lines_or_titles(
    ha_core: HomeAssistant,
    client: TestClient[web.Request, web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="custom_components.xiaozhi")
    body = firmware_body()
    body["board"] = {"type": "x", "name": f"board\n{FORGED_LINE}\u202e" + "b" * 500}
    body["application"] = {"version": "1.0\r\n" + FORGED_LINE}
    body["language"] = "en\x1b[31m"
    headers = firmware_headers()
    del headers["User-Agent"], headers["Accept-Language"]
    response = await client.post("/xiaozhi/ota/", headers=headers, json=body)
    assert response.status == HTTPStatus.OK
    code = (await response.json())["activation"]["code"]
    await ha_core.async_block_till_done()
    (flow,) = pairing_flows(ha_core)
    form = await ha_core.config_entries.flow.async_configure(flow["flow_id"])
    placeholders = form["description_placeholders"]
    assert placeholders is not None
    board = placeholders["board"]
    result = await pair(ha_core, code)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    entry = device_entry(ha_core)
    shown = [
        board,
        entry.title,
        entry.data[CONF_BOARD],
        entry.data[CONF_FIRMWARE_VERSION],
        entry.data[CONF_DEVICE_LANGUAGE],
        *(record.getMessage() for record in caplog.records),
    ]
    for text in shown:
        assert not any(char in text for char in "\n\r\x1b\u202e"), text
    assert len(entry.title) <= 64 + 7
    assert len(entry.data[CONF_FIRMWARE_VERSION]) <= 32
    assert "\\x0a" in entry.data[CONF_BOARD]
    assert any("asks to be paired" in record.getMessage() for record in caplog.records)


# ---------------------------------------------------------------- whole bodies


async def two_writes(first: bytes, second: bytes) -> AsyncIterator[bytes]:
    """A body in two writes; the server's loop runs between them."""
    yield first
    for _ in range(20):  # let the server read the first part on its own
        await asyncio.sleep(0)
    yield second


@pytest.mark.parametrize("path", ["/xiaozhi/ota/", "/xiaozhi/ota/activate"])
async def test_a_body_in_two_writes_is_judged_whole(
    ha_core: HomeAssistant,
    client: TestClient[web.Request, web.Application],
    path: str,
) -> None:
    body = firmware_body()
    body["application"] = {"name": "xiaozhi", "version": "2.0.0-from-body"}
    raw = json.dumps(body).encode()
    headers = firmware_headers()
    del headers["Device-Id"], headers["Client-Id"]  # only the body names the device
    if path.endswith("activate"):
        await check_in(client)
    response = await client.post(
        path, headers=headers, data=two_writes(raw[:40], raw[40:])
    )
    if path.endswith("activate"):
        assert response.status == HTTPStatus.ACCEPTED  # found its claim by the body
        return
    assert response.status == HTTPStatus.OK
    answer = await response.json()
    assert answer["firmware"]["version"] == "2.0.0-from-body"


async def raw_post(
    port: int, path: str, head: str, pieces: Iterable[bytes]
) -> tuple[int, int]:
    """POST a chunked body piece by piece over a raw socket.

    Returns the answer's status and how many body bytes were written before it came.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0

    async def send() -> None:
        nonlocal sent
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        for piece in pieces:
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            sent += len(piece)
            await asyncio.sleep(0)  # a trickle: the server reads as it arrives
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    sender = asyncio.create_task(send())
    try:
        status_line = await reader.readline()
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(status_line.split()[1]), sent


@pytest.mark.parametrize("path", ["/xiaozhi/ota/", "/xiaozhi/ota/activate"])
async def test_a_trickled_huge_body_is_refused_with_413(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    head = "".join(f"{key}: {value}\r\n" for key, value in firmware_headers().items())
    pieces = (b"x" * 4096 for _ in range(2560))  # 10 MiB in 4 KiB writes
    port = client.server.port
    assert port is not None
    status, sent = await raw_post(port, path, head, pieces)
    assert status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert sent < 1024 * 1024  # refused long before the end


async def test_a_body_that_never_ends_is_refused_in_time(
    client: TestClient[web.Request, web.Application],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ota, "BODY_TIMEOUT_S", 0.2)
    port = client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{key}: {value}\r\n" for key, value in firmware_headers().items())
    writer.write(
        f"POST /xiaozhi/ota/ HTTP/1.1\r\nHost: x\r\n{head}"
        "Content-Length: 1000\r\n\r\n{".encode()
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    assert int(status_line.split()[1]) == HTTPStatus.REQUEST_TIMEOUT


async def test_concurrent_claimants_never_displace_the_first(
    ha_core: HomeAssistant, client: TestClient[web.Request, web.Application]
) -> None:
    code = (await check_in(client))["activation"]["code"]

    async def claim(n: int) -> int:
        response = await client.post(
            "/xiaozhi/ota/",
            headers=firmware_headers(client_id=f"intruder-{n}"),
            json=firmware_body(),
        )
        return response.status

    statuses = await asyncio.gather(*(claim(n) for n in range(20)))
    assert sorted(statuses) == [200, 200] + [503] * 18
    assert (await check_in(client))["activation"]["code"] == code
    assert await activate_status(client, CLIENT_ID) == HTTPStatus.ACCEPTED
    assert len(async_get_server(ha_core).pairings.claims(MAC)) == 3


# Characters that break log lines, terminals or names, and ordinary ones.
UNSAFE_CHARS = "\n\r\t\x00\x1b\x7f\x85\u2028\u2029\u202e\u200b\ufeff\U000e0041\udc80"
HOSTILE_CHARS = UNSAFE_CHARS + "面包板-ok_1.2 [ERROR]%s%%{}"


def hostile_strings(count: int, seed: int = 17) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(HOSTILE_CHARS) for _ in range(rng.randrange(0, 300)))
        for _ in range(count)
    ]


async def test_fuzzed_identity_strings_stay_printable_everywhere(
    ha_core: HomeAssistant,
    client: TestClient[web.Request, web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="custom_components.xiaozhi")
    async_get_server(ha_core).http_limiter = RateLimiter(rate=1e6, burst=10**6)
    async_get_server(ha_core).pairings = PairingRegistry(max_pending=1000)
    texts = hostile_strings(60)
    for n, text in enumerate(texts):
        mac = f"02:00:00:00:{n // 256:02x}:{n % 256:02x}"
        body = {
            "mac_address": mac,
            "uuid": f"uuid-{n}",
            "language": text[:40],
            "application": {"version": text},
            "board": {"name": text},
        }
        raw = json.dumps(body).encode("utf-8", errors="surrogatepass")
        response = await client.post("/xiaozhi/ota/", data=raw)
        assert response.status in (HTTPStatus.OK, HTTPStatus.BAD_REQUEST), text
    await ha_core.async_block_till_done()
    shown = [record.getMessage() for record in caplog.records]
    for flow in pairing_flows(ha_core):
        form = await ha_core.config_entries.flow.async_configure(flow["flow_id"])
        placeholders = form["description_placeholders"]
        assert placeholders is not None
        shown.extend(placeholders.values())
    assert len(shown) > len(texts)
    unsafe = set(UNSAFE_CHARS)
    for text in shown:
        assert not unsafe & set(text), repr(text)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
