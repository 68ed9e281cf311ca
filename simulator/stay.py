"""``--stay``: after its answer the device stays connected, idle, as the firmware does.

After ``tts stop`` of a push-to-talk answer the firmware goes Idle and keeps its
audio channel open; it considers the channel dead once nothing has come from the
server for 120 s (protocol.cc ``IsTimeout``, `DEVICE_IDLE_TIMEOUT_S`). Meanwhile
Home Assistant can still reach it: the board answers MCP requests (volume,
brightness, its tools), and an announcement is played like an answer
(``tts start``, its audio, ``tts stop``). The stay ends when Home Assistant
closes the connection, or when nothing came from it for the stay's seconds.

After an ``auto`` answer the firmware would listen for a follow-up instead, and
Home Assistant ends a follow-up nobody makes by closing the connection; the
simulator does not listen again, so that it stays as after push to talk.
"""

import asyncio
from collections.abc import Awaitable, Callable

from custom_components.xiaozhi.protocol.codec import OpusDecoder, pcm_to_wav
from custom_components.xiaozhi.protocol.firmware import DEVICE_IDLE_TIMEOUT_S

from .console import Console
from .conversation import Speech, TurnRecorder, closed_message
from .device import SimulatedDevice

DEFAULT_STAY_S = DEVICE_IDLE_TIMEOUT_S

type Player = Callable[[bytes], Awaitable[None]]


def speech_pcm(speech: Speech, sample_rate: int) -> bytes:
    """Return the speech's Opus packets decoded to mono PCM at ``sample_rate``."""
    decoder = OpusDecoder(sample_rate)
    return b"".join(decoder.decode(p) for p in speech.packets) + decoder.flush()


async def stay(
    device: SimulatedDevice,
    recorder: TurnRecorder,
    console: Console,
    seconds: float,
    *,
    play: Player | None = None,
) -> None:
    """Stay connected and idle until Home Assistant closes, or ``seconds`` of quiet.

    Each announcement is printed (its subtitles and length) and given to
    ``play`` as a WAV file, if a player is given.
    """
    console.line(
        f"staying connected, idle, until nothing comes from Home Assistant for"
        f" {seconds:g} s (the firmware's channel timeout is"
        f" {DEVICE_IDLE_TIMEOUT_S:g} s): try an announcement, the volume or the"
        " brightness; Ctrl-C ends"
    )
    while not recorder.speeches.empty():  # the answer, already reported
        recorder.speeches.get_nowait()
    rate = device.server_sample_rate
    while True:
        recorder.incoming.clear()
        while not recorder.speeches.empty():
            speech = recorder.speeches.get_nowait()
            pcm = await asyncio.to_thread(speech_pcm, speech, rate)
            console.line(
                f"announcement: {' '.join(speech.sentences) or '(no text)'}"
                f" ({len(pcm) / 2 / rate:.2f} s of audio)"
            )
            if play is not None and pcm:
                await play(pcm_to_wav(pcm, rate))
        if device.closed:
            code, reason = await device.wait_closed()
            console.line(closed_message(code, reason) + "; the stay is over")
            return
        waits = {
            asyncio.ensure_future(recorder.incoming.wait()),
            asyncio.ensure_future(device.wait_disconnected()),
        }
        try:
            done, _ = await asyncio.wait(
                waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for wait in waits:
                wait.cancel()
        if not done:
            console.line(
                f"nothing from Home Assistant for {seconds:g} s: the channel timed"
                " out, as the firmware's does; closing"
            )
            return
