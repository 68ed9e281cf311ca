"""The audio of an announcement, as 24 kHz mono PCM for the device.

Home Assistant resolves an announcement before the satellite gets it: a message
to speak becomes a TTS stream of the pipeline's engine (``media_id_source`` is
``tts``; the satellite asks for WAV), anything else an absolute URL (media
sources resolved, Home Assistant's own paths signed), and the optional
preannounce sound another URL.

TTS audio is read through HA's tts API from the stream itself, so it starts as
soon as the engine produces it. URLs are fetched and decoded by Home Assistant's
ffmpeg (its configured binary), which reads any container and codec. The
preannounce sound :data:`chime.CHIME_MEDIA_ID` is our own chime (timers).

A Xiaozhi device connects only for a conversation, so an announcement to a
device that is not connected waits for it (`async_wait_for_voice_session`,
:data:`CONNECT_WAIT_S`, shorter than the 30 s of HA's satellite wizard, whose
connection test is an announcement made right after pairing). It waits on the
device's runtime, which every transport's link attaches to.
"""

import asyncio
from collections.abc import AsyncGenerator
import contextlib
from typing import Final

from homeassistant.components import tts
from homeassistant.components.assist_satellite import AssistSatelliteAnnouncement
from homeassistant.components.ffmpeg import get_ffmpeg_manager
from homeassistant.core import HomeAssistant, callback

from ..device.runtime import DeviceRuntime
from .chime import CHIME_MEDIA_ID, timer_chime
from .session import VoiceSession
from .tts_audio import SPEECH_SAMPLE_RATE, WAV_FORMAT, pcm_from_stream

# 100 ms of 24 kHz 16-bit mono per read.
READ_BYTES: Final = SPEECH_SAMPLE_RATE * 2 // 10
# What is kept of ffmpeg's complaints for the error message.
MAX_ERROR_CHARS: Final = 500
# How long an announcement waits for the device to connect.
CONNECT_WAIT_S: Final = 25.0


class AnnouncementError(Exception):
    """The announcement's audio could not be read or decoded."""


@callback
def ready_voice_session(runtime: DeviceRuntime) -> VoiceSession | None:
    """Return the device's voice session if it is connected and served by voice."""
    session = runtime.session
    if session is None or not session.ready or session.closed:
        return None
    handler = session.handler
    return handler if isinstance(handler, VoiceSession) else None


async def async_wait_for_voice_session(
    runtime: DeviceRuntime, seconds: float = CONNECT_WAIT_S
) -> VoiceSession | None:
    """Return the device's voice session, waiting up to ``seconds`` for it.

    Returns None when the device did not connect (or its session is served by
    another handler) within ``seconds``.
    """
    if (voice := ready_voice_session(runtime)) is not None:
        return voice
    changed = asyncio.Event()
    unsubscribe = runtime.async_add_listener(changed.set)
    try:
        async with asyncio.timeout(seconds):
            while (voice := ready_voice_session(runtime)) is None:
                await changed.wait()
                changed.clear()
    except TimeoutError:
        return None
    finally:
        unsubscribe()
    return voice


async def announcement_audio(
    hass: HomeAssistant, announcement: AssistSatelliteAnnouncement
) -> AsyncGenerator[bytes]:
    """Yield the preannounce sound, then the announcement, as 24 kHz mono PCM.

    Raises:
        AnnouncementError: A URL could not be fetched or decoded.
        TtsError: The TTS engine failed.
    """
    if announcement.preannounce_media_id == CHIME_MEDIA_ID:
        yield timer_chime()
    elif announcement.preannounce_media_id:
        async with contextlib.aclosing(
            url_audio(hass, announcement.preannounce_media_id)
        ) as chime:
            async for pcm in chime:
                yield pcm
    async with contextlib.aclosing(_media_audio(hass, announcement)) as media:
        async for pcm in media:
            yield pcm


def _media_audio(
    hass: HomeAssistant, announcement: AssistSatelliteAnnouncement
) -> AsyncGenerator[bytes]:
    if announcement.media_id_source == "tts" and announcement.tts_token:
        stream = tts.async_get_stream(hass, announcement.tts_token)
        if stream is not None and stream.extension == WAV_FORMAT:
            return pcm_from_stream(stream)
    return url_audio(hass, announcement.media_id)


async def url_audio(
    hass: HomeAssistant, url: str, rate: int = SPEECH_SAMPLE_RATE
) -> AsyncGenerator[bytes]:
    """Yield the audio at ``url`` as mono s16le PCM at ``rate``, decoded by ffmpeg.

    Closing the generator stops ffmpeg.

    Raises:
        AnnouncementError: ffmpeg could not read or decode it.
    """
    process = await asyncio.create_subprocess_exec(
        get_ffmpeg_manager(hass).binary,
        *("-hide_banner", "-nostats", "-loglevel", "error"),
        *("-i", url, "-vn", "-map_metadata", "-1"),
        *("-f", "s16le", "-ac", "1", "-ar", str(rate), "pipe:1"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        while pcm := await process.stdout.read(READ_BYTES):
            yield pcm
        if await process.wait():
            complaint = (await process.stderr.read()).decode(errors="replace")
            raise AnnouncementError(
                f"cannot play {url}: {complaint.strip()[:MAX_ERROR_CHARS]}"
            )
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
