"""Announcements and conversations started by Home Assistant, on a connected device.

HA's ``assist_satellite.announce`` / ``start_conversation`` actions run for real:
messages are synthesized by the pipeline's TTS engine (our entity on the local
provider), URLs are served by a local web server and decoded by HA's ffmpeg.
"""

import asyncio
from collections.abc import AsyncGenerator
from datetime import timedelta
import gc
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.components.assist_satellite import DOMAIN as SATELLITE_DOMAIN
from homeassistant.components.assist_satellite.entity import AssistSatelliteState
from homeassistant.const import ATTR_ENTITY_ID
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.protocol.codec import pcm_to_wav
from custom_components.xiaozhi.voice.announce import (
    CONNECT_WAIT_S,
    AnnouncementError,
    url_audio,
)
from fake_provider import ChatReply, FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import DeviceFactory, Recorder, dominant_hz, tone
from tests.helpers.voice import (
    ANSWER,
    FRAME_BYTES_OUT,
    RATE_OUT,
    TIMEOUT,
    TRANSCRIPT,
    answer_messages,
    chat_messages,
    kinds,
    satellite,
    satellite_id,
    say,
    sentences,
    track_states,
    until,
    utterance,
)

MESSAGE = "晚饭好了"
CHIME_SECONDS = 0.5
MEDIA_SECONDS = 1.0


def wav_tone(freq: float, seconds: float, rate: int = 16000) -> bytes:
    return pcm_to_wav(tone(freq, rate, seconds), rate)


@pytest.fixture
async def media_server(socket_enabled: None) -> AsyncGenerator[TestServer]:
    """Serves /chime.wav (600 Hz), /media.wav (400 Hz) and /long.wav (10 s)."""
    files = {
        "/chime.wav": wav_tone(600, CHIME_SECONDS),
        "/media.wav": wav_tone(400, MEDIA_SECONDS),
        "/long.wav": wav_tone(400, 10),
    }

    async def serve(request: web.Request) -> web.Response:
        if request.path not in files:
            raise web.HTTPNotFound
        return web.Response(body=files[request.path], content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def device(pipeline: Pipeline, devices: DeviceFactory) -> SimulatedDevice:
    sim = devices(features={})
    await sim.open()
    return sim


async def announce(hass: HomeAssistant, **data: Any) -> None:
    async with asyncio.timeout(TIMEOUT):
        await hass.services.async_call(
            SATELLITE_DOMAIN,
            "announce",
            {ATTR_ENTITY_ID: satellite_id(hass), **data},
            blocking=True,
        )


# ---------------------------------------------------------------- announcing


async def test_a_message_is_spoken_with_its_subtitle(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    states = track_states(ha_core, satellite_id(ha_core))

    await announce(ha_core, message=MESSAGE, preannounce=False)

    messages = device.pending_messages()
    assert kinds(messages) == ["start", "sentence_start", "stop"]
    assert sentences(messages) == [MESSAGE]
    [request] = fake_provider.speech_requests
    assert request.input == MESSAGE
    pcm = device.received_pcm()
    expected = fake_provider.speech.pcm_bytes(MESSAGE)
    assert 0 <= len(pcm) - expected <= 2 * FRAME_BYTES_OUT
    assert states == ["responding", "idle"]


async def test_urls_are_played_after_the_preannounce_sound(
    ha_core: HomeAssistant, media_server: TestServer, device: SimulatedDevice
) -> None:
    await announce(
        ha_core,
        media_id=str(media_server.make_url("/media.wav")),
        preannounce_media_id=str(media_server.make_url("/chime.wav")),
    )

    messages = device.pending_messages()
    assert kinds(messages) == ["start", "stop"]
    pcm = device.received_pcm()
    chime = int(RATE_OUT * CHIME_SECONDS) * 2
    media = int(RATE_OUT * MEDIA_SECONDS) * 2
    assert 0 <= len(pcm) - chime - media <= 2 * FRAME_BYTES_OUT
    assert dominant_hz(pcm[: chime - FRAME_BYTES_OUT], RATE_OUT) == pytest.approx(
        600, abs=5
    )
    assert dominant_hz(pcm[chime + FRAME_BYTES_OUT :], RATE_OUT) == pytest.approx(
        400, abs=5
    )


async def test_home_assistants_own_preannounce_sound_is_fetched_from_it(
    ha_core: HomeAssistant,
    client: TestClient[web.Request, web.Application],
    device: SimulatedDevice,
) -> None:
    ha_core.config.internal_url = str(client.make_url("/")).rstrip("/")

    await announce(ha_core, message=MESSAGE)

    assert sentences(device.pending_messages()) == [MESSAGE]
    # HA's chime (about a second) comes before the message.
    assert len(device.received_pcm()) > RATE_OUT * 2


def shorten_the_wait(hass: HomeAssistant) -> None:
    """Wait a moment, not 25 s, for a device that is not connected."""
    assert satellite(hass).connect_wait == CONNECT_WAIT_S < 30
    satellite(hass).connect_wait = 0.05


async def test_an_announcement_waits_for_the_device_to_connect(
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    action = ha_core.async_create_task(
        announce(ha_core, message=MESSAGE, preannounce=False)
    )
    await asyncio.sleep(0)
    assert not action.done()

    sim = devices(features={})
    await sim.open()
    await action

    assert sentences(sim.pending_messages()) == [MESSAGE]


async def test_announcing_to_a_device_that_does_not_connect_fails_after_a_while(
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    runtime: DeviceRuntime,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shorten_the_wait(ha_core)
    with pytest.raises(HomeAssistantError) as raised:
        await announce(ha_core, message=MESSAGE, preannounce=False)
    assert raised.value.translation_domain == DOMAIN
    assert raised.value.translation_key == "device_did_not_connect"
    assert raised.value.translation_placeholders == {
        "device": "Kitchen speaker",
        "seconds": "0.05",
    }
    assert "0.05 s" in str(raised.value)
    assert satellite(ha_core).state == AssistSatelliteState.IDLE
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_audio_that_cannot_be_played_fails_the_action(
    ha_core: HomeAssistant,
    media_server: TestServer,
    runtime: DeviceRuntime,
    device: SimulatedDevice,
) -> None:
    with pytest.raises(HomeAssistantError) as raised:
        await announce(
            ha_core,
            media_id=str(media_server.make_url("/missing.wav")),
            preannounce=False,
        )
    assert raised.value.translation_key == "announcement_failed"
    assert "missing.wav" in str(raised.value.translation_placeholders)
    assert kinds(device.pending_messages()) == ["start", "stop"]
    assert runtime.connected


async def test_a_device_leaving_mid_announcement_fails_the_action(
    ha_core: HomeAssistant, media_server: TestServer, device: SimulatedDevice
) -> None:
    action = ha_core.async_create_task(
        announce(
            ha_core, media_id=str(media_server.make_url("/long.wav")), preannounce=False
        )
    )
    await until(lambda: bool(device.received_audio))
    await device.close()
    with pytest.raises(HomeAssistantError) as raised:
        await action
    assert raised.value.translation_key == "device_not_connected"


async def test_the_device_can_cut_an_announcement_short(
    ha_core: HomeAssistant, media_server: TestServer, device: SimulatedDevice
) -> None:
    action = ha_core.async_create_task(
        announce(
            ha_core, media_id=str(media_server.make_url("/long.wav")), preannounce=False
        )
    )
    await until(lambda: bool(device.received_audio))
    await device.abort()
    await action
    assert kinds(device.pending_messages())[-1] == "stop"
    assert len(device.received_pcm()) < RATE_OUT * 2 * 10


async def test_url_audio_reports_what_ffmpeg_could_not_read(
    ha_core: HomeAssistant, device: SimulatedDevice
) -> None:
    with pytest.raises(AnnouncementError, match="cannot play"):
        async for _ in url_audio(ha_core, "/no/such/file.wav"):
            pass


# ---------------------------------------------------------------- starting a conversation


async def test_a_started_conversation_continues_with_the_answer(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    async with asyncio.timeout(TIMEOUT):
        await ha_core.services.async_call(
            SATELLITE_DOMAIN,
            "start_conversation",
            {
                ATTR_ENTITY_ID: satellite_id(ha_core),
                "start_message": "要开灯吗？",
                "extra_system_prompt": "You asked whether to turn on the light.",
                "preannounce": False,
            },
            blocking=True,
        )
    assert sentences(device.pending_messages()) == ["要开灯吗？"]

    # The firmware (auto mode) listens after tts stop.
    await say(device)
    messages = await answer_messages(device)
    assert sentences(messages) == [ANSWER]
    sent = chat_messages(fake_provider, 0)
    assert "You asked whether to turn on the light." in sent[0]["content"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("assistant", "要开灯吗？"),
        ("user", TRANSCRIPT),
    ]


async def test_in_realtime_mode_the_device_listens_on_after_an_announcement(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT, "谢谢")
    fake_provider.add_reply(ChatReply.text(ANSWER), ChatReply.text("不客气。"))
    await say(device, "realtime")
    await answer_messages(device)

    await announce(ha_core, message=MESSAGE, preannounce=False)
    assert sentences(device.pending_messages()) == [MESSAGE]

    await device.send_pcm(utterance())
    messages = await answer_messages(device)
    assert messages[0]["text"] == "谢谢"


async def test_a_device_served_by_another_handler_cannot_announce(
    ha_core: HomeAssistant, runtime: DeviceRuntime, device: SimulatedDevice
) -> None:
    Recorder(runtime)  # e.g. a diagnostics tool took over the session
    shorten_the_wait(ha_core)
    with pytest.raises(HomeAssistantError) as raised:
        await announce(ha_core, message=MESSAGE, preannounce=False)
    assert raised.value.translation_key == "device_did_not_connect"


# ---------------------------------------------------------------- HA's satellite wizard


@pytest.fixture
async def websocket_api(ha_core: HomeAssistant) -> None:
    """HA's websocket API, registered before a test client freezes the router."""
    assert await async_setup_component(ha_core, "websocket_api", {})


async def test_the_wizards_connection_test_passes_once_the_device_connects(
    websocket_api: None,
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    client: TestClient[web.Request, web.Application],
    devices: DeviceFactory,
    hass_ws_client: WebSocketGenerator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wizard tests right after pairing; the user then wakes the device."""
    ha_core.config.internal_url = str(client.make_url("/")).rstrip("/")
    ws = await hass_ws_client(ha_core)
    await ws.send_json_auto_id(
        {"type": "assist_satellite/test_connection", "entity_id": satellite_id(ha_core)}
    )
    await asyncio.sleep(0)
    assert not satellite(ha_core).runtime.connected

    sim = devices(features={})
    await sim.open()
    async with asyncio.timeout(TIMEOUT):
        response = await ws.receive_json()

    assert response["success"], response
    assert response["result"] == {"status": "success"}
    # HA's test sound was fetched from HA and played.
    await until(lambda: "stop" in kinds(sim.pending_messages()))
    assert sim.received_pcm()
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_a_connection_test_nobody_answers_leaves_no_traceback(
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    runtime: DeviceRuntime,
    hass_ws_client: WebSocketGenerator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shorten_the_wait(ha_core)
    ws = await hass_ws_client(ha_core)
    await ws.send_json_auto_id(
        {"type": "assist_satellite/test_connection", "entity_id": satellite_id(ha_core)}
    )
    await until(lambda: "did not connect within" in caplog.text)
    # The wizard gives up after its own 30 s.
    async_fire_time_changed(ha_core, dt_util.utcnow() + timedelta(seconds=31))
    reply = await ws.receive_json()

    assert reply["result"] == {"status": "timeout"}
    await ha_core.async_block_till_done(wait_background_tasks=True)
    gc.collect()
    assert "never retrieved" not in caplog.text
    assert "Traceback" not in caplog.text
