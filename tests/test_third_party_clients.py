"""Xiaozhi clients nobody here wrote, unmodified, against the integration.

xiaozhi-sdk 0.5.1 (PyPI) runs as is, over real HTTP and WebSocket, against
Home Assistant's test server: it checks in, hears its code in a pairing session,
a person types the code into the config flow, the SDK reconnects with the same
token, speaks a request and answers Home Assistant's MCP calls.

What the SDK does, read from its code (xiaozhi_sdk/core.py, ota.py, mcp.py):
``init_connection`` reads ``websocket.token`` and ``websocket.url`` from its
first OTA answer even when it carries ``activation`` (a KeyError without them),
connects with that token *before* activating (and gives up when the connection
is refused), never shows the code, polls ``/activate`` every 3 s (after 3 s, 10
times), and after the 200 closes and reconnects with the same token without
asking the OTA endpoint again. Its MCP handler reads
``params.capabilities.vision.url`` and ``.token`` of ``initialize`` before it
answers.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import json
import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from xiaozhi_sdk import XiaoZhiWebsocket

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.const import CONF_CODE, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import DOMAIN, OTA_PATH
from custom_components.xiaozhi.device.camera import vision_token, vision_url
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.server.registry import async_get_server
from fake_provider import FakeProvider
from tests.helpers.photos import use_test_server_url
from tests.helpers.voice import TRANSCRIPT, silence, utterance

SDK_MAC = "aa:bb:cc:00:11:22"
TIMEOUT = 60.0
# The SDK's frames: 60 ms of 16 kHz mono s16le.
FRAME_BYTES = 16000 * 2 * 60 // 1000
ECHO_TOOL = "self.sdk.echo"

type Inbox = asyncio.Queue[dict[str, Any]]


def echo(arguments: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A tool of the SDK's kind: returns (result, is_error)."""
    return {"echo": arguments["text"]}, False


@pytest.fixture
async def ha_client(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    pipeline: Pipeline,
    hass_client_no_auth: Callable[
        [], Awaitable[TestClient[web.Request, web.Application]]
    ],
) -> TestClient[web.Request, web.Application]:
    """Home Assistant's HTTP server on a real port, with a voice pipeline."""
    # HA sets the image platform up with the first device; the running test
    # server cannot take its views later.
    assert await async_setup_component(ha_core, "image", {})
    client = await hass_client_no_auth()
    await use_test_server_url(ha_core, str(client.make_url("/")))
    return client


@pytest.fixture
async def sdk_client() -> AsyncIterator[tuple[XiaoZhiWebsocket, Inbox]]:
    """The SDK client, closed after the test; its messages land in the inbox."""
    inbox: Inbox = asyncio.Queue()

    async def on_message(message: dict[str, Any]) -> None:
        await inbox.put(message)

    # Its default input rate is 24 kHz; the fixture recording is 16 kHz.
    sdk = XiaoZhiWebsocket(on_message, audio_sample_rate=16000)
    yield sdk, inbox
    await sdk.close()


async def next_message(
    inbox: Inbox, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while not predicate(message := await inbox.get()):
            pass
    return message


def is_tts(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == "tts" and m.get("state") == state


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0.02)


def device_entry(hass: HomeAssistant) -> ConfigEntry | None:
    return hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, SDK_MAC)


async def type_the_code(hass: HomeAssistant, code: str) -> None:
    """What the person does: open the discovered device and type its code."""
    await hass.async_block_till_done()
    [flow] = [
        flow
        for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"]["source"] == SOURCE_INTEGRATION_DISCOVERY
    ]
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_CODE: code}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("lights")
async def test_xiaozhi_sdk_pairs_on_its_first_run_talks_and_serves_tools(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    ha_client: TestClient[web.Request, web.Application],
    sdk_client: tuple[XiaoZhiWebsocket, Inbox],
) -> None:
    """Check-in, the code in a pairing session, pairing, a spoken turn, MCP.

    py-xiaozhi (src/activation/ota.py ``_process_ota_response``,
    src/protocols/websocket_protocol.py) likewise keeps the WebSocket URL and
    token of its first OTA answer and connects with them after activating: the
    ``websocket`` section of the unpaired answer, whose token becomes the
    device's, is what lets it connect on its first run too.
    """
    sdk, inbox = sdk_client
    await sdk.set_mcp_tool(
        [
            {
                "name": ECHO_TOOL,
                "description": "Say the text back.",
                "inputSchema": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
                "tool_func": echo,
                "is_async": False,
            }
        ]
    )
    sdk.ota_url = str(ha_client.make_url(OTA_PATH.rstrip("/")))

    # Check-in: the first answer has the code and a pairing-only token.
    assert await sdk.init_connection(SDK_MAC)
    server = async_get_server(ha_core)
    pending = server.pairings.get(SDK_MAC)
    assert pending is not None
    assert sdk.websocket_token == pending.token
    assert device_entry(ha_core) is None

    # The pairing session: the code is shown (and spoken) and nothing else runs.
    subtitle = await next_message(inbox, is_tts("sentence_start"))
    assert pending.code in subtitle["text"]
    await next_message(inbox, is_tts("stop"))
    spoken = " ".join(pending.code)
    await until(lambda: any(spoken in r.input for r in fake_provider.speech_requests))
    assert sdk.output_audio_queue, "the code was not spoken"
    session = server.pairing_sessions.get(SDK_MAC)
    assert session is not None
    assert SDK_MAC not in server.links
    assert fake_provider.transcriptions == []
    assert fake_provider.chat_requests == []

    # The person types the code the device showed.
    [code] = re.findall(r"\d{6}", subtitle["text"])
    await type_the_code(ha_core, code)
    entry = device_entry(ha_core)
    assert entry is not None
    assert entry.data[CONF_TOKEN] == pending.token
    await session.async_wait_closed()

    # The SDK's poll gets 200; it reconnects with the same token, says "hi".
    assert sdk.ota_task is not None
    await asyncio.wait_for(sdk.ota_task, TIMEOUT)
    assert not sdk.wait_device_activated
    runtime: DeviceRuntime = entry.runtime_data
    await until(lambda: runtime.connected and bool(runtime.tools))

    # MCP: initialize carried the vision capability the SDK requires.
    assert sdk.explain_url == vision_url(ha_core)
    assert sdk.explain_url.endswith("/xiaozhi/vision")
    assert sdk.explain_token == vision_token(pending.token)
    assert [tool.name for tool in runtime.tools] == [ECHO_TOOL]
    link = runtime.link
    assert link is not None
    result = await link.tool_client().call_tool(ECHO_TOOL, {"text": "你好"})
    assert not result.is_error
    assert json.loads(result.text) == {"echo": "你好"}

    # A spoken turn. The SDK opened a realtime listen when it connected; its
    # "hi" (a typed request) came after it, so listen again as the SDK does
    # itself after each answer in auto mode.
    fake_provider.add_transcript(TRANSCRIPT)
    sdk.mode = "auto"
    await sdk._start_listen()  # the SDK's own listen message
    pcm = utterance() + silence(1.0)
    for start in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        assert await sdk.send_audio(pcm[start : start + FRAME_BYTES])
    heard = await next_message(
        inbox, lambda m: m.get("type") == "stt" and m.get("text") == TRANSCRIPT
    )
    assert heard["text"] == TRANSCRIPT
    sdk.output_audio_queue.clear()
    await next_message(inbox, is_tts("sentence_start"))
    await next_message(inbox, is_tts("stop"))
    assert sdk.output_audio_queue, "the answer was not heard"
    assert any(
        TRANSCRIPT in json.dumps(request["messages"], ensure_ascii=False)
        for request in fake_provider.chat_requests
    )
