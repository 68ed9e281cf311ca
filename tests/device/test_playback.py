"""A voice session's playback: tts start and stop around paced, framed audio."""

import asyncio
from collections.abc import AsyncGenerator

import pytest

from custom_components.xiaozhi.protocol.codec import OpusDecoder
from custom_components.xiaozhi.protocol.framing import FrameType, decode_frame
from custom_components.xiaozhi.transport.base import TransportError
from tests.helpers.devices import dominant_hz, tone
from tests.helpers.links import LinkFactory, opus_packets, say_hello, transport_of


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_play_sends_tts_start_then_framed_audio(
    make_link: LinkFactory, version: int
) -> None:
    link = make_link(version=version)
    session = await say_hello(link)
    packets = opus_packets(7)
    assert await session.playback.play_opus(packets)
    assert await session.playback.play_opus([])  # a second play of the same reply
    await session.playback.stop_speaking()
    transport = transport_of(session)
    assert transport.kinds()[1:] == ["start"] + ["binary"] * 7 + ["stop"]
    for frame, packet in zip(transport.frames, packets, strict=True):
        decoded = decode_frame(frame, version)
        assert decoded.type is FrameType.OPUS
        assert decoded.payload == packet
    assert not session.speaking


async def test_play_pcm_resamples_and_encodes(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link)

    async def chunks() -> AsyncGenerator[bytes]:
        pcm = tone(880, 16000, 0.5)
        for start in range(0, len(pcm), 3001):
            yield pcm[start : start + 3001]

    assert await session.playback.play_pcm(chunks(), 16000)
    decoder = OpusDecoder(24000)
    pcm = b"".join(decoder.decode(frame) for frame in transport_of(session).frames)
    assert abs(dominant_hz(pcm, 24000) - 880) < 10


async def test_unsendable_packets_are_skipped(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link(version=3)
    session = await say_hello(link)
    good = opus_packets(1)[0]
    assert await session.playback.play_opus([b"", b"x" * 70000, good])
    assert transport_of(session).frames == [
        b"\x00\x00" + len(good).to_bytes(2, "big") + good
    ]
    assert "Not sending an Opus packet to Kitchen" in caplog.text


async def test_stop_speaking_interrupts_a_play(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link)
    transport = transport_of(session)
    transport.binary_gate = asyncio.Event()
    first = asyncio.ensure_future(session.playback.play_opus(opus_packets(20)))
    await transport.binary_waiting.wait()
    second = asyncio.ensure_future(session.playback.play_opus(opus_packets(2)))
    await asyncio.sleep(0)
    await session.playback.stop_speaking()
    assert await first is False
    assert await second is False  # queued behind the interrupted reply
    assert transport.kinds()[1:] == ["start", "stop"]
    assert session.playback.downlink.queued == 0

    transport.binary_gate = None
    assert await session.playback.play_opus(opus_packets(1))
    assert transport.kinds()[3:] == ["start", "binary"]


async def test_playback_stops_when_the_socket_breaks(
    make_link: LinkFactory,
) -> None:
    link = make_link()
    session = await say_hello(link)
    await session.playback.start_speaking()
    transport_of(session).error = TransportError("reset by peer")
    assert await session.playback.play_opus(opus_packets(8)) is False
    assert session.closed


async def test_stop_while_the_producer_is_between_packets(
    make_link: LinkFactory,
) -> None:
    link = make_link()
    session = await say_hello(link)
    packets = opus_packets(2)
    next_sentence = asyncio.Event()

    async def streaming_tts() -> AsyncGenerator[bytes]:
        yield packets[0]
        await next_sentence.wait()
        yield packets[1]

    play = asyncio.ensure_future(session.playback.play_opus(streaming_tts()))
    while session.playback.downlink.stats.frames_sent < 1:
        await asyncio.sleep(0)
    await session.playback.stop_speaking()
    next_sentence.set()
    assert await play is False
    assert transport_of(session).kinds()[1:] == ["start", "binary", "stop"]
