"""Timers on a device: HA's timer intents and tools, every way it rings, restarts.

Timers are started and ended through Home Assistant's own intents (the voice
pipeline's local intents, the Assist API's tool, ``intent.async_handle``): a
timer decreased to zero finishes at once, so nothing waits for a clock.
"""

from collections.abc import Callable
from datetime import timedelta
import time
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components import persistent_notification
from homeassistant.components.assist_pipeline import Pipeline, async_update_pipeline
from homeassistant.components.intent import TimerInfo, async_device_supports_timers
from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import intent
from homeassistant.util import dt as dt_util

from custom_components.xiaozhi.device.link import DeviceLink
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.voice.chime import CHIME_NOTES_HZ, timer_chime
from custom_components.xiaozhi.voice.timer_store import STORAGE_KEY, StoredTimer
from custom_components.xiaozhi.voice.timers import (
    ALERT_REPEATS,
    DeviceTimers,
    clock_text,
    finished_message,
    running_line,
    timer_label,
)
from fake_provider import ChatReply, FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import (
    MAC,
    DeviceFactory,
    dominant_hz,
    make_device_entry,
    registry_device_id,
    runtime_of,
    wait_until,
)
from tests.helpers.links import LastingTransport, say_hello
from tests.helpers.mqtt import MqttDevice, check_in
from tests.helpers.translations import message
from tests.helpers.voice import (
    ANSWER,
    RATE_OUT,
    TRANSCRIPT,
    answer_messages,
    chat_messages,
    satellite,
    say,
    sentences,
    until,
)

type Notifications = dict[str, persistent_notification.Notification]


def start_timer(hass: HomeAssistant, **slots: Any) -> Any:
    return intent.async_handle(
        hass,
        "test",
        intent.INTENT_START_TIMER,
        {key: {"value": value} for key, value in slots.items()},
        device_id=registry_device_id(hass),
        language="zh",
    )


async def finish_timer(hass: HomeAssistant, minutes: int) -> None:
    """End the device's running timer now: decrease it by all it has."""
    await intent.async_handle(
        hass,
        "test",
        intent.INTENT_DECREASE_TIMER,
        {"minutes": {"value": minutes}},
        device_id=registry_device_id(hass),
        language="zh",
    )


async def cancel_timer(hass: HomeAssistant) -> None:
    await intent.async_handle(
        hass,
        "test",
        intent.INTENT_CANCEL_TIMER,
        {},
        device_id=registry_device_id(hass),
        language="zh",
    )


def timers_of(hass: HomeAssistant) -> DeviceTimers:
    timers = satellite(hass).timers
    assert timers is not None
    return timers


@pytest.fixture
def notifications(ha_core: HomeAssistant) -> Notifications:
    """Every persistent notification shown, by id, as Home Assistant shows it."""
    shown: Notifications = {}

    def updated(
        update: persistent_notification.UpdateType, changed: Notifications
    ) -> None:
        if update is not persistent_notification.UpdateType.REMOVED:
            shown.update(changed)

    persistent_notification.async_register_callback(ha_core, updated)
    return shown


@pytest.fixture
async def device(pipeline: Pipeline, devices: DeviceFactory) -> SimulatedDevice:
    """A connected device, its voice session open, speaking zh."""
    sim = devices(features={})
    await sim.open()
    return sim


# ---------------------------------------------------------------- starting


@pytest.mark.usefixtures("runtime")
async def test_every_paired_device_takes_timers(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    device_id = registry_device_id(ha_core)
    assert async_device_supports_timers(ha_core, device_id)

    await start_timer(ha_core, minutes=5, name="泡茶")
    [timer] = timers_of(ha_core).running.values()
    assert (timer.name, timer.seconds) == ("泡茶", 300)

    assert await ha_core.config_entries.async_unload(device_entry.entry_id)
    assert not async_device_supports_timers(ha_core, device_id)


async def test_a_timer_asked_for_by_voice_is_set_by_local_intents(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device: SimulatedDevice,
) -> None:
    await async_update_pipeline(ha_core, pipeline, prefer_local_intents=True)
    fake_provider.add_transcript("Set a timer for 5 minutes")

    await say(device)
    messages = await answer_messages(device)

    [timer] = timers_of(ha_core).running.values()
    assert timer.seconds == 300
    assert fake_provider.chat_requests == []  # no language model was asked
    assert "not able to start timers" not in " ".join(sentences(messages))


async def test_the_assist_tool_starts_a_timer_on_the_device(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device: SimulatedDevice,
) -> None:
    fake_provider.add_transcript("十分钟后提醒我")
    fake_provider.add_reply(
        ChatReply.tool_call("assist__intent__HassStartTimer", {"minutes": 10}),
        ChatReply.text("好的，十分钟的计时器开始了。"),
    )

    await say(device)
    await answer_messages(device)

    [timer] = timers_of(ha_core).running.values()
    assert timer.seconds == 600
    tools = [t["function"]["name"] for t in fake_provider.chat_requests[0]["tools"]]
    assert "assist__intent__HassStartTimer" in tools
    prompt = chat_messages(fake_provider, 0)[0]["content"]
    assert "not able to start timers" not in prompt
    [result] = [m for m in chat_messages(fake_provider, 1) if m["role"] == "tool"]
    assert '"error":false' in result["content"]


# ---------------------------------------------------------------- ringing


async def test_a_finished_timer_rings_in_the_open_session(
    ha_core: HomeAssistant,
    device: SimulatedDevice,
    fake_provider: FakeProvider,
    notifications: Notifications,
) -> None:
    """The chime, then the spoken message in the device's language."""
    await start_timer(ha_core, minutes=5)

    await finish_timer(ha_core, 5)
    messages = await answer_messages(device)

    assert sentences(messages) == ["5分钟计时器时间到了。"]
    assert [r.input for r in fake_provider.speech_requests] == ["5分钟计时器时间到了。"]
    pcm = device.received_pcm(RATE_OUT)
    note = len(timer_chime(RATE_OUT)) // len(CHIME_NOTES_HZ)
    # The chime's first note, then the speech (the fake provider's 400 Hz voice).
    assert dominant_hz(pcm[: note // 2], RATE_OUT) == pytest.approx(1318.5, abs=15)
    speech = pcm[len(timer_chime(RATE_OUT)) :]
    assert dominant_hz(speech[:RATE_OUT], RATE_OUT) == pytest.approx(400, abs=5)
    assert timers_of(ha_core).running == {}
    assert notifications == {}
    assert not device.closed


async def test_a_timer_waits_for_the_answer_playing(
    ha_core: HomeAssistant, device: SimulatedDevice, fake_provider: FakeProvider
) -> None:
    """The answer is not cut short: the timer rings after its tts stop."""
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text("好的，" + ANSWER, chunk=1, hold_after=4))
    await start_timer(ha_core, minutes=5)

    await say(device)
    await fake_provider.wait_held()
    await until(lambda: device.speaking)
    await finish_timer(ha_core, 5)
    fake_provider.release()
    answer = await answer_messages(device)
    ring = await answer_messages(device)

    assert sentences(answer) == ["好的，", ANSWER]
    assert sentences(ring) == ["5分钟计时器时间到了。"]


async def test_a_named_timer_says_its_name(ha_core: HomeAssistant) -> None:
    timer = TimerInfo(
        id="t",
        name="泡茶",
        seconds=90,
        device_id="d",
        start_hours=None,
        start_minutes=1,
        start_seconds=30,
        created_at=0,
        updated_at=0,
        language="zh",
    )
    assert finished_message(timer, "zh-CN") == "泡茶计时器时间到了。"
    timer.name = None
    assert finished_message(timer, "en-US") == "Your 1 minute 30 second timer is done."
    assert timer_label(timer, "ja-JP") == "1分30秒"


async def test_an_idle_always_connected_device_is_alerted_until_it_wakes(
    ha_core: HomeAssistant, runtime: DeviceRuntime, notifications: Notifications
) -> None:
    """No session on a link that outlives sessions: alerts, a bounded number."""
    link, transport = lasting_link_of(ha_core, runtime)
    timers = timers_of(ha_core)
    timers.alert_interval = 0.01

    await start_timer(ha_core, minutes=5, name="泡茶")
    shown = await transport.next_type("tts")
    assert shown["state"] == "sentence_start"
    assert shown["text"].startswith("计时器 泡茶 · ")
    await finish_timer(ha_core, 5)
    await until(lambda: len(alerts(transport)) == ALERT_REPEATS)

    assert alerts(transport)[0] == {
        "session_id": "",
        "type": "alert",
        "status": "计时器",
        "message": "泡茶计时器时间到了。",
        "emotion": "surprised",
    }
    # The timer line is cleared: none runs any more.
    assert [m["text"] for m in transport.messages if m["type"] == "tts"][-1] == ""
    assert notifications == {}

    # The next one: the user wakes the device after the first alert.
    timers.alert_interval = 3600
    transport.messages.clear()
    await start_timer(ha_core, minutes=1)
    await finish_timer(ha_core, 1)
    await until(lambda: len(alerts(transport)) == 1)
    await say_hello(link)
    await until(lambda: not timers.ringing)
    assert len(alerts(transport)) == 1


async def test_a_timer_rings_on_an_idle_device_connected_over_mqtt(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    notifications: Notifications,
) -> None:
    """A real MQTT connection, no conversation: the timer shows, then alerts."""
    device = MqttDevice((await check_in(await hass_client_no_auth()))["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Success"
    runtime = runtime_of(mqtt_entry)
    await wait_until(runtime, lambda: runtime.connected)
    timers = timers_of(ha_core)
    timers.alert_interval = 0.01

    await start_timer(ha_core, minutes=5, name="泡茶")
    shown = await device.next_message("tts")
    assert shown["text"].startswith("计时器 泡茶 · ")
    await finish_timer(ha_core, 5)
    alert = await device.next_message("alert")
    assert (alert["status"], alert["message"]) == ("计时器", "泡茶计时器时间到了。")
    assert runtime.session is None
    assert notifications == {}


async def test_a_session_whose_pipeline_cannot_speak_shows_an_alert(
    ha_core: HomeAssistant, devices: DeviceFactory, notifications: Notifications
) -> None:
    """The preferred pipeline has no TTS: the announcement fails, the alert shows."""
    sim = devices(features={})
    await sim.open()
    await start_timer(ha_core, minutes=5)

    await finish_timer(ha_core, 5)
    alert = await sim.next_message("alert")

    assert (alert["status"], alert["message"]) == ("计时器", "5分钟计时器时间到了。")
    assert notifications == {}


async def test_unloading_the_device_stops_its_ringing(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
) -> None:
    _, transport = lasting_link_of(ha_core, runtime)
    timers = timers_of(ha_core)
    timers.alert_interval = 3600
    await start_timer(ha_core, minutes=5)
    await finish_timer(ha_core, 5)
    await until(lambda: len(alerts(transport)) == 1)

    assert await ha_core.config_entries.async_unload(device_entry.entry_id)

    assert not timers.ringing
    assert len(alerts(transport)) == 1


async def test_a_device_that_cannot_be_reached_is_told_in_a_notification(
    ha_core: HomeAssistant, runtime: DeviceRuntime, notifications: Notifications
) -> None:
    await start_timer(ha_core, minutes=5, name="泡茶")
    [timer_id] = timers_of(ha_core).running

    before = dt_util.now()
    await finish_timer(ha_core, 5)
    await until(lambda: bool(notifications))
    after = dt_util.now()

    shown = notifications[f"xiaozhi_timer_{timer_id}"]
    assert shown["title"] == message("timer_notification_title")
    assert shown["message"] in {
        message(
            "timer_not_rung",
            device="Kitchen speaker",
            timer="“泡茶” (5:00)",
            time=moment.strftime("%H:%M"),
        )
        for moment in (before, after)
    }
    assert runtime.link is None


async def test_a_cancelled_timer_does_not_ring(
    ha_core: HomeAssistant, runtime: DeviceRuntime, notifications: Notifications
) -> None:
    await start_timer(ha_core, minutes=5)
    await cancel_timer(ha_core)
    await ha_core.async_block_till_done()

    assert timers_of(ha_core).running == {}
    assert notifications == {}


# ---------------------------------------------------------------- restarts


def stored(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "01J0TIMER",
        "device_id": "device-1",
        "mac": MAC,
        "device_name": "Kitchen speaker",
        "name": "泡茶",
        "seconds": 300,
        "ends_at": (dt_util.utcnow() + timedelta(minutes=3)).isoformat(),
        "seconds_left": 180,
        **overrides,
    }


async def test_timers_a_restart_cancelled_are_reported_once(
    ha_core: HomeAssistant,
    hass_storage: dict[str, Any],
    notifications: Notifications,
) -> None:
    stopped_at = dt_util.utcnow() - timedelta(minutes=1)
    hass_storage[STORAGE_KEY] = {
        "version": 1,
        "data": {
            "stopped_at": stopped_at.isoformat(),
            "timers": [
                stored(),
                stored(id="paused", name=None, ends_at=None, seconds_left=75),
                # It should have rung before the stop: it ended without us.
                stored(id="old", ends_at=(stopped_at - timedelta(hours=1)).isoformat()),
                stored(
                    id="other",
                    device_id="device-2",
                    mac="11:22:33:44:55:66",
                    device_name="Bedroom",
                ),
                {"id": "broken"},
            ],
        },
    }
    entry = make_device_entry()
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()

    kitchen = notifications["xiaozhi_timers_lost_device-1"]
    assert kitchen["title"] == message("timers_lost_title")
    rings = dt_util.as_local(
        dt_util.parse_datetime(stored()["ends_at"])  # type: ignore[arg-type]
    ).strftime("%H:%M")
    assert kitchen["message"] == message(
        "timers_lost",
        device="Kitchen speaker",
        timers=f"“泡茶” (5:00) → {rings}, 5:00 (1:15 ⏸)",
    )
    assert "xiaozhi_timers_lost_device-2" in notifications
    assert len(notifications) == 2
    # Told once: the store forgot them.
    assert hass_storage[STORAGE_KEY]["data"]["timers"] == []

    # The device, always connected, may still show them: its line is cleared.
    _, transport = lasting_link_of(ha_core, runtime_of(entry))
    cleared = await transport.next_type("tts")
    assert (cleared["state"], cleared["text"]) == ("sentence_start", "")


async def test_running_timers_are_written_for_the_next_start(
    ha_core: HomeAssistant, runtime: DeviceRuntime, hass_storage: dict[str, Any]
) -> None:
    await start_timer(ha_core, minutes=5, name="泡茶")
    [timer] = timers_of(ha_core).running.values()

    ha_core.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await ha_core.async_block_till_done()

    [kept] = hass_storage[STORAGE_KEY]["data"]["timers"]
    assert kept["id"] == timer.id
    assert kept["device_id"] == registry_device_id(ha_core)
    assert (kept["name"], kept["seconds"], kept["seconds_left"]) == ("泡茶", 300, 300)
    rings_at = StoredTimer.from_json(kept)
    assert rings_at is not None
    assert rings_at.rings_at is not None


# ---------------------------------------------------------------- helpers


def lasting_link_of(
    hass: HomeAssistant, runtime: DeviceRuntime
) -> tuple[DeviceLink, LastingTransport]:
    """Connect the device over a transport whose link outlives its sessions."""
    transport = LastingTransport()
    link = DeviceLink(
        hass, runtime, transport, mac=MAC, name="Kitchen", hello_timeout=None
    )
    async_get_server(hass).async_register_link(link)
    link.start()
    return link, transport


def alerts(transport: LastingTransport) -> list[dict[str, Any]]:
    return [m for m in transport.messages if m["type"] == "alert"]


def test_running_lines_and_clock_texts() -> None:
    timer = TimerInfo(
        id="t",
        name=None,
        seconds=3725,
        device_id="d",
        start_hours=1,
        start_minutes=2,
        start_seconds=5,
        created_at=time.monotonic_ns(),
        updated_at=time.monotonic_ns(),
        language="en",
    )
    assert clock_text(3725) == "1:02:05"
    assert clock_text(75) == "1:15"
    assert running_line(timer, "zh").startswith("计时器 1小时2分钟5秒 · ")
    timer.pause()
    assert running_line(timer, "en").startswith(
        "Timer 1 hour 2 minute 5 second · paused, 1:02:0"
    )


def test_stored_timers_refuse_what_is_not_one() -> None:
    assert StoredTimer.from_json("x") is None
    assert StoredTimer.from_json(stored(seconds="many")) is None
    kept = StoredTimer.from_json(stored())
    assert kept is not None
    assert kept.name == "泡茶"
