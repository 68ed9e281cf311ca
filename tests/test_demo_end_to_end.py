"""The demo as a newcomer runs it: what the simulator says is what the demo hears.

Everything is real but the home: the demo provider (`FakeProvider.for_demo`, with
its espeak-ng ears and no queued transcript), Home Assistant with the demo light
and the demo's pipelines made by `demo.setup_ha.configure` over HA's own WebSocket
API, and the command-line simulator (`simulator.cli.async_main`) saying its
``--say`` text with the real espeak-ng as real-time Opus over a real WebSocket.
The provider counts its requests: a request HA's local intents handle never
reaches its language model.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
import io
import json
from pathlib import Path
import shutil
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from homeassistant.components.tts.const import DATA_TTS_MANAGER
from homeassistant.core import HomeAssistant
from homeassistant.helpers import area_registry as ar, entity_registry as er
from homeassistant.setup import async_setup_component
from homeassistant.util.yaml import parse_yaml

from custom_components.xiaozhi.const import DOMAIN
from demo.setup_ha import (
    DEMO_AREA_ALIASES,
    DEMO_AREA_NAME,
    DEMO_LIGHT_YAML,
    DEMO_PIPELINES,
    HaWebSocket,
    configure,
)
from fake_provider import CHAT_PATH, TRANSCRIPTIONS_PATH, FakeProvider
from fake_provider.demo import JOKES, DemoMode, Timing
from simulator import checkin, state as sim_state
from simulator.cli import async_main
from simulator.device import DEFAULT_CLIENT_ID
from simulator.state import DeviceState
from tests.helpers.devices import MAC

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="the simulator speaks with espeak-ng"
)

LIGHT = "light.demo_light"
TIMEOUT = 60.0


@pytest.fixture
async def fake_provider(socket_enabled: None) -> AsyncIterator[FakeProvider]:
    """The demo provider, as ``python -m fake_provider --demo`` runs it, but instant."""
    demo = DemoMode(timing=Timing.instant())
    await demo.listener.prepare()  # it learns its vocabulary once per process
    async with FakeProvider.for_demo(demo, history=True) as provider:
        yield provider


@pytest.fixture
async def demo_home(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    device_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> list[str]:
    """HA with the demo light, a paired device and the demo's setup.

    Returns what the setup did. Everything that registers HTTP views is set up
    before the first client starts HA's HTTP server.
    """
    ha_core.data[DATA_TTS_MANAGER].use_file_cache = False
    config = parse_yaml(DEMO_LIGHT_YAML)
    assert isinstance(config, dict)
    for domain in ("input_boolean", "template"):
        assert await async_setup_component(ha_core, domain, {domain: config[domain]})
    assert await async_setup_component(ha_core, DOMAIN, {})
    assert await async_setup_component(
        ha_core, "config", {}
    )  # as in configuration.yaml
    await ha_core.async_block_till_done()
    client = HaWebSocket(await hass_ws_client(ha_core))
    return await configure(client, provider_entry.entry_id)


@pytest.fixture
async def ha_url(
    demo_home: list[str],
    ha_core: HomeAssistant,
    hass_client_no_auth: Callable[[], Awaitable[Any]],
) -> str:
    """The test Home Assistant's URL, with the demo set up."""
    client = await hass_client_no_auth()
    return str(client.make_url("/")).rstrip("/")


@pytest.fixture
async def state_file(
    ha_url: str, device_entry: MockConfigEntry, tmp_path: Path
) -> Path:
    """The simulator's state file of the paired device of ``device_entry``."""
    path = tmp_path / "state.json"
    await sim_state.save_state(
        path,
        DeviceState(
            mac=MAC, client_id=DEFAULT_CLIENT_ID, ota_url=checkin.ota_url(ha_url)
        ),
    )
    return path


async def say(ha_url: str, state_file: Path, text: str, *args: str) -> list[Any]:
    """Run the simulator saying ``text``; return the JSON messages it received."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["--ha", ha_url, "--state-file", str(state_file), "--no-save"]
    status = await async_main(
        [*argv, "--say", text, "--reply-timeout", str(TIMEOUT), *args], out=out, err=err
    )
    assert status == 0, err.getvalue() + out.getvalue()
    return [
        json.loads(line.split("← ", 1)[1])
        for line in out.getvalue().splitlines()
        if "] ← {" in line
    ]


def heard(messages: list[Any]) -> list[str]:
    return [m["text"] for m in messages if m["type"] == "stt"]


def subtitles(messages: list[Any]) -> list[str]:
    return [m["text"] for m in messages if m.get("state") == "sentence_start"]


def requests_to(provider: FakeProvider, path: str) -> int:
    return sum(1 for request in provider.requests if request.path == path)


async def use_pipeline(hass: HomeAssistant, entry: MockConfigEntry, name: str) -> None:
    """Pick the device's pipeline on its device page (its pipeline select)."""
    registry = er.async_get(hass)
    (select,) = [
        e.entity_id
        for e in er.async_entries_for_config_entry(registry, entry.entry_id)
        if e.domain == "select" and "pipeline" in e.unique_id
    ]
    await hass.services.async_call(
        "select", "select_option", {"entity_id": select, "option": name}, blocking=True
    )


async def test_the_demo_setup_is_idempotent(
    ha_core: HomeAssistant,
    demo_home: list[str],
    provider_entry: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
) -> None:
    (name_zh, _), (name_en, _) = DEMO_PIPELINES
    assert demo_home == [
        "set the home's country (CN) and name",
        f"created the area '{DEMO_AREA_NAME}' (alias 客厅)",
        f"put {LIGHT} in the area '{DEMO_AREA_NAME}'",
        f"created the preferred Assist pipeline '{name_zh}' (zh-CN)",
        f"created the Assist pipeline '{name_en}' (en)",
    ]
    area = ar.async_get(ha_core).async_get_area_by_name(DEMO_AREA_NAME)
    assert area is not None
    assert set(area.aliases) == set(DEMO_AREA_ALIASES)
    light = er.async_get(ha_core).async_get(LIGHT)
    assert light is not None
    assert light.area_id == area.id

    again = HaWebSocket(await hass_ws_client(ha_core))
    assert await configure(again, provider_entry.entry_id) == []


async def test_chinese_light_request_is_heard_and_handled_without_the_llm(
    ha_core: HomeAssistant, fake_provider: FakeProvider, state_file: Path
) -> None:
    assert ha_core.states.get(LIGHT).state == "off"  # type: ignore[union-attr]

    messages = await say(ha_url_of(state_file), state_file, "打开客厅灯")

    assert heard(messages) == ["打开客厅灯"]
    assert ha_core.states.get(LIGHT).state == "on"  # type: ignore[union-attr]
    assert subtitles(messages)  # HA's own answer, spoken by the demo's TTS
    assert requests_to(fake_provider, TRANSCRIPTIONS_PATH) == 1
    assert requests_to(fake_provider, CHAT_PATH) == 0


async def test_what_the_demo_does_not_know_is_heard_as_nothing(
    ha_core: HomeAssistant, fake_provider: FakeProvider, state_file: Path
) -> None:
    """Not a phrase of its vocabulary: nothing is heard, rather than a wrong phrase."""
    messages = await say(ha_url_of(state_file), state_file, "把卧室的空调调到二十六度")

    assert not [text for text in heard(messages) if text]
    assert requests_to(fake_provider, TRANSCRIPTIONS_PATH) == 1
    assert requests_to(fake_provider, CHAT_PATH) == 0
    assert ha_core.states.get(LIGHT).state == "off"  # type: ignore[union-attr]
    assert subtitles(messages)  # the device says it did not catch that


async def test_english_light_request_and_a_question_for_the_agent(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    state_file: Path,
    device_entry: MockConfigEntry,
) -> None:
    await use_pipeline(ha_core, device_entry, DEMO_PIPELINES[1][0])
    url = ha_url_of(state_file)

    messages = await say(
        url, state_file, "Turn on the living room light", "--lang", "en-US"
    )
    assert heard(messages) == ["Turn on the living room light"]
    assert ha_core.states.get(LIGHT).state == "on"  # type: ignore[union-attr]
    assert requests_to(fake_provider, CHAT_PATH) == 0

    # What HA's intents do not know goes to the demo's agent, as it was said.
    messages = await say(url, state_file, "Tell me a joke.", "--lang", "en-US")
    assert heard(messages) == ["Tell me a joke."]
    assert requests_to(fake_provider, CHAT_PATH) == 1
    [request] = fake_provider.chat_requests
    assert request["messages"][-1]["content"] == "Tell me a joke."
    first = subtitles(messages)[0]
    assert any(first in joke for joke in JOKES["en"]), first


def ha_url_of(state_file: Path) -> str:
    ota_url: str = json.loads(state_file.read_text())["ota_url"]
    return ota_url.removesuffix("/xiaozhi/ota/")
