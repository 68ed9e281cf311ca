"""What the benchmarks share: the scripted provider, and Home Assistant in-process.

Home Assistant is pytest-homeassistant-custom-component's test instance, with a
temporary config directory and its HTTP server on a 127.0.0.1 port, with this
integration's STT, streaming conversation agent and streaming-input TTS entities
on an OpenAI-compatible provider at a local address (tests/fake_provider.py), and
paired devices (entries created directly, as the tests do).

The provider is scripted like a real one: 250 ms to the first token, then 30
tokens a second (one character per token), and 150 ms from a speech request to
its first audio byte; every turn answers the same 120-character Chinese reply to
the same utterance (tests/fixtures/zh_turn_on_the_light.wav).

Only the standard library is imported here at module level: the load bench's
device and provider processes use the constants without loading Home Assistant.
"""

from collections.abc import AsyncIterator, Sequence
import contextlib
from dataclasses import dataclass
from pathlib import Path
import socket
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from homeassistant.components.assist_pipeline import Pipeline
    from homeassistant.core import HomeAssistant

    from fake_provider import ChatReply

REPO = Path(__file__).resolve().parents[1]
REPLY = (
    "好的，客厅的灯已经为您打开了。现在室内温度是二十三度，湿度百分之四十五，"
    "感觉比较舒适。明天白天多云转晴，最高气温二十六度，晚上可能会有小雨，"
    "出门记得带上雨伞。您明天早上八点有一个会议，我已经帮您设好了七点的闹钟。"
    "请问还有别的事情需要我做吗？"
)
assert len(REPLY) == 120
TRANSCRIPT = "打开客厅灯"
TTFT_S = 0.25
TOKENS_PER_S = 30.0
TTS_FIRST_BYTE_S = 0.15
UTTERANCE = REPO / "tests/fixtures/zh_turn_on_the_light.wav"
STT_ENTITY = "stt.xiaozhi_stt"
TTS_ENTITY = "tts.xiaozhi_tts"
AGENT_ENTITY = "conversation.xiaozhi_conversation"


def scripted_reply() -> ChatReply:
    """Return the reply of every turn, streamed at the provider's pace."""
    from fake_provider import ChatReply

    return ChatReply.text(REPLY, chunk=1, ttft=TTFT_S, token_delay=1 / TOKENS_PER_S)


@dataclass(frozen=True, slots=True)
class ProviderEndpoint:
    """Where Home Assistant finds the provider (a `FakeProvider`, maybe elsewhere)."""

    base_url: str
    api_key: str | None
    models: Sequence[str]


@dataclass(frozen=True, slots=True)
class PairedDevice:
    """A device entry to create before the devices connect."""

    mac: str
    token: str
    title: str


@contextlib.asynccontextmanager
async def home_assistant(
    provider: ProviderEndpoint, port: int, devices: Sequence[PairedDevice]
) -> AsyncIterator[HomeAssistant]:
    """HA serving HTTP on 127.0.0.1:``port``, with a provider and device entries."""
    # isort: off
    from homeassistant import loader
    from homeassistant.components.tts.const import DATA_TTS_MANAGER
    from homeassistant.helpers import frame
    from homeassistant.setup import async_setup_component

    # Imported after Home Assistant, which must install its schema library first.
    from pytest_homeassistant_custom_component.common import (
        MockConfigEntry,
        async_test_home_assistant,
    )

    # isort: on
    import custom_components.xiaozhi  # noqa: F401 (HA finds the integration here)
    from custom_components.xiaozhi.config_flow import default_subentries
    from custom_components.xiaozhi.const import DOMAIN
    from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM
    from custom_components.xiaozhi.transport.mqtt import (
        DATA_MQTT_SETTINGS,
        MAX_CONNECTIONS,
        MqttSettings,
    )
    from tests.helpers.devices import device_entry_data
    from tests.helpers.providers import provider_entry_data

    with tempfile.TemporaryDirectory() as config_dir:
        async with async_test_home_assistant(config_dir=config_dir) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS, None)
            # HA's bootstrap sets it up: without it a deprecation report raises.
            frame.async_setup(hass)
            assert await async_setup_component(hass, "homeassistant", {})
            http = {"server_host": ["127.0.0.1"], "server_port": port}
            assert await async_setup_component(hass, "http", {"http": http})
            await hass.http.start()  # HA would when it starts; this one runs already
            # The MQTT+UDP endpoint on free loopback ports (not the real 18830/18831).
            hass.data[DATA_MQTT_SETTINGS] = MqttSettings(
                host="127.0.0.1",
                mqtt_port=0,
                udp_port=0,
                max_connections=max(MAX_CONNECTIONS, 2 * len(devices)),
            )
            provider_entry = MockConfigEntry(
                domain=DOMAIN,
                title="Fake service",
                unique_id=provider.base_url,
                # It reads only the address and the key of the provider.
                data=provider_entry_data(provider),  # type: ignore[arg-type]
                subentries_data=default_subentries(
                    PRESET_CUSTOM, True, list(provider.models)
                ),
            )
            provider_entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(provider_entry.entry_id)
            for device in devices:
                device_entry = MockConfigEntry(
                    domain=DOMAIN,
                    title=device.title,
                    unique_id=device.mac,
                    data=device_entry_data(device.mac, device.token),
                )
                device_entry.add_to_hass(hass)
                assert await hass.config_entries.async_setup(device_entry.entry_id)
            await hass.async_block_till_done()
            # Every run says the same: only fresh synthesis is a fair measure.
            hass.data[DATA_TTS_MANAGER].use_file_cache = False
            try:
                yield hass
            finally:
                await hass.async_stop(force=True)


async def preferred_pipeline(hass: HomeAssistant) -> Pipeline:
    """Create the Assist pipeline of our STT, agent and TTS and prefer it."""
    from homeassistant.components.assist_pipeline import (
        async_create_default_pipeline,
        async_update_pipeline,
    )
    from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE

    pipeline = await async_create_default_pipeline(
        hass, STT_ENTITY, TTS_ENTITY, "Xiaozhi"
    )
    assert pipeline is not None
    await async_update_pipeline(hass, pipeline, conversation_engine=AGENT_ENTITY)
    hass.data[KEY_ASSIST_PIPELINE].pipeline_store.async_set_preferred_item(pipeline.id)
    return pipeline


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the value at ``fraction`` (0..1) of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ms(value: float) -> str:
    """Format seconds as milliseconds, right-aligned."""
    return f"{value * 1000:7.1f} ms"
