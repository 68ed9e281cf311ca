"""A device talking to HA's Assist pipeline: the pipeline, the satellite, what is said."""

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components.assist_pipeline import (
    Pipeline,
    async_create_default_pipeline,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_satellite import DOMAIN as SATELLITE_DOMAIN
from homeassistant.components.tts.const import DATA_TTS_MANAGER
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.event import async_track_state_change_event

from custom_components.xiaozhi.assist_satellite import XiaozhiAssistSatellite
from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.protocol.codec import parse_wav
from fake_provider import FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import MAC

STT_ENTITY = "stt.xiaozhi_stt"


TTS_ENTITY = "tts.xiaozhi_tts"


AGENT_ENTITY = "conversation.xiaozhi_conversation"


TIMEOUT = 20.0


RATE_IN = 16000


RATE_OUT = 24000


FRAME_BYTES_OUT = RATE_OUT * 2 * 60 // 1000


UTTERANCE = Path(__file__).parents[1] / "fixtures" / "zh_turn_on_the_light.wav"


TRANSCRIPT = "打开客厅灯"


ANSWER = "客厅灯已经打开了。"


type StateLog = list[str]


def silence(seconds: float) -> bytes:
    return bytes(int(RATE_IN * seconds) * 2)


def utterance() -> bytes:
    """The fixture's speech with silence around it, so HA's VAD ends it."""
    wav = parse_wav(UTTERANCE.read_bytes())
    assert (wav.rate, wav.channels, wav.width) == (RATE_IN, 1, 2)
    return silence(1.0) + wav.pcm + silence(1.5)


async def say(device: SimulatedDevice, mode: str = "auto") -> None:
    await device.listen_start(mode)
    await device.send_pcm(utterance())


async def answer_messages(device: SimulatedDevice) -> list[dict[str, Any]]:
    """Every message up to and including ``tts stop``."""
    messages: list[dict[str, Any]] = []
    while True:
        message = await device.next_message(timeout=TIMEOUT)
        messages.append(message)
        if message["type"] == "tts" and message["state"] == "stop":
            return messages


async def next_tts(device: SimulatedDevice, state: str) -> dict[str, Any]:
    """The next ``tts`` message in ``state`` (others are skipped)."""
    while (message := await device.next_message("tts", timeout=TIMEOUT))[
        "state"
    ] != state:
        pass
    return message


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    return [
        m.get("state", m["type"]) if m["type"] == "tts" else m["type"] for m in messages
    ]


def sentences(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages if m.get("state") == "sentence_start"]


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def satellite_id(hass: HomeAssistant) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        SATELLITE_DOMAIN, DOMAIN, f"{MAC}-assist_satellite"
    )
    assert entity_id is not None
    return entity_id


def satellite(hass: HomeAssistant) -> XiaozhiAssistSatellite:
    entity = hass.data["entity_components"][SATELLITE_DOMAIN].get_entity(
        satellite_id(hass)
    )
    assert isinstance(entity, XiaozhiAssistSatellite)
    return entity


def track_states(hass: HomeAssistant, entity_id: str) -> StateLog:
    """Record the entity's states, without repeats."""
    states: StateLog = []

    @callback
    def changed(event: Event[EventStateChangedData]) -> None:
        new = event.data["new_state"]
        if new is not None and (not states or states[-1] != new.state):
            states.append(new.state)

    async_track_state_change_event(hass, [entity_id], changed)
    return states


def chat_messages(provider: FakeProvider, index: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = provider.chat_requests[index]["messages"]
    return messages


@pytest.fixture
async def pipeline(ha_core: HomeAssistant, provider_entry: MockConfigEntry) -> Pipeline:
    """The preferred pipeline: our STT, agent and streaming TTS."""
    ha_core.data[DATA_TTS_MANAGER].use_file_cache = False
    created = await async_create_default_pipeline(
        ha_core, STT_ENTITY, TTS_ENTITY, "Xiaozhi"
    )
    assert created is not None
    await async_update_pipeline(ha_core, created, conversation_engine=AGENT_ENTITY)
    ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store.async_set_preferred_item(
        created.id
    )
    return async_get_pipeline(ha_core, created.id)
