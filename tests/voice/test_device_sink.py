"""Speech played on a device session: the speaker's sink, on a recording transport.

The end-to-end tests (tests/voice/test_session.py) cover the usual path over a real
socket; these reach the interruptions a real device rarely produces at the right
moment: the reply stopped while the speaker still produces audio, or while a
sentence waits for the audio before it.
"""

import asyncio

from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.voice.device_sink import MAX_QUEUED_CHUNKS, DeviceSpeech
from tests.helpers.devices import MAC, tone
from tests.helpers.links import LinkFactory, say_hello, transport_of

TIMEOUT = 5.0
CHUNK = tone(400, 24000, 0.06)


async def ready_session(make_link: LinkFactory) -> DeviceSession:
    return await say_hello(make_link(runtime=DeviceRuntime(MAC)))


async def test_a_reply_plays_with_its_sentences_in_band(
    make_link: LinkFactory,
) -> None:
    session = await ready_session(make_link)
    started: list[bool] = []
    speech = DeviceSpeech(session, "zh-CN", on_start=lambda: started.append(True))

    async with asyncio.timeout(TIMEOUT):
        await speech.start_speaking()
        await speech.sentence_started("你好。")
        await speech.audio(CHUNK)
        await speech.emotion("happy", "🙂")
        await speech.sentence_started("再见。")
        await speech.audio(CHUNK)
        await speech.stop_speaking()

    transport = transport_of(session)
    kinds = transport.kinds()
    assert kinds[1] == "start"
    assert kinds[-1] == "stop"
    assert started == [True]
    assert speech.played is True
    assert speech.started
    assert speech.first_audio_at is not None
    # The second sentence starts after the first one's audio went out, the
    # face with it: both in their place in the paced audio.
    first = kinds.index("sentence_start")
    second = kinds.index("sentence_start", first + 1)
    assert "binary" not in kinds[:first]
    assert "binary" in kinds[first:second]
    assert kinds.index("llm") in range(first + 1, second)
    assert "binary" in kinds[second:]


async def test_stopping_without_anything_to_play_sends_only_tts_stop(
    make_link: LinkFactory,
) -> None:
    session = await ready_session(make_link)
    speech = DeviceSpeech(session, None)
    await speech.stop_speaking()
    await speech.audio(CHUNK)  # nothing plays: dropped
    speech.close()
    assert speech.played is True
    assert not speech.started
    assert transport_of(session).kinds() == ["hello"]


async def test_an_interrupted_play_releases_a_producer_waiting_for_room(
    hass: HomeAssistant,
    make_link: LinkFactory,
) -> None:
    session = await ready_session(make_link)
    transport = transport_of(session)
    transport.binary_gate = asyncio.Event()  # the device stops reading
    speech = DeviceSpeech(session, "en")
    await speech.start_speaking()

    async def produce() -> None:
        # Far more than the sink and the downlink hold.
        for _ in range(MAX_QUEUED_CHUNKS + 100):
            await speech.audio(CHUNK)

    producer = hass.async_create_task(produce())
    async with asyncio.timeout(TIMEOUT):
        await transport.binary_waiting.wait()
    await asyncio.sleep(0.05)
    assert not producer.done()

    await session.playback.stop_speaking()  # what an abort from the device does
    async with asyncio.timeout(TIMEOUT):
        await producer
        await speech.stop_speaking()
    assert speech.played is False
    transport.binary_gate.set()


async def test_a_sentence_waiting_for_earlier_audio_is_dropped_when_stopped(
    hass: HomeAssistant,
    make_link: LinkFactory,
) -> None:
    session = await ready_session(make_link)
    transport = transport_of(session)
    transport.binary_gate = asyncio.Event()
    speech = DeviceSpeech(session, "en")
    await speech.start_speaking()
    await speech.audio(CHUNK)
    await speech.sentence_started("never shown")
    async with asyncio.timeout(TIMEOUT):
        await transport.binary_waiting.wait()

    await session.playback.stop_speaking()
    transport.binary_gate.set()
    async with asyncio.timeout(TIMEOUT):
        await speech.stop_speaking()
    assert speech.played is False
    assert "never shown" not in str(transport.messages)


async def test_alerts_carry_the_title_in_the_device_language(
    make_link: LinkFactory,
) -> None:
    session = await ready_session(make_link)
    speech = DeviceSpeech(session, "zh-CN")
    await speech.alert("出错了")
    alert = transport_of(session).messages[-1]
    assert (alert["status"], alert["message"], alert["emotion"]) == (
        "错误",
        "出错了",
        "sad",
    )
