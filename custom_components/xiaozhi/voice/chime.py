"""The timer chime: a short two-note bell, made here, no sound file and no ffmpeg.

In a voice session a sound must be part of our own audio, between ``tts start``
and ``tts stop``: the firmware drops audio outside its speaking state, and a
sound it plays itself is cut off by the next state change. So the chime is PCM,
played before the spoken message as the announcement's preannounce sound: a
satellite announcement with ``preannounce_media_id`` :data:`CHIME_MEDIA_ID`
plays it (``announce.announcement_audio``).
"""

from array import array
import math
from typing import Final

from .tts_audio import SPEECH_SAMPLE_RATE

# Not a URL: Home Assistant hands media ids of other schemes through unchanged.
CHIME_MEDIA_ID: Final = "xiaozhi:timer-chime"
# E6 then C6, twice: a doorbell-like fall that cuts through speech.
CHIME_NOTES_HZ: Final = (1318.5, 1046.5, 1318.5, 1046.5)
NOTE_SECONDS: Final = 0.35
GAP_SECONDS: Final = 0.05
# The fade of a struck bell, per second, and the peak level (of 32767).
DECAY_PER_SECOND: Final = 6.0
PEAK: Final = 12000


def timer_chime(rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """Return the chime as mono s16le PCM at ``rate``."""
    samples = array("h")
    note = round(rate * NOTE_SECONDS)
    gap = round(rate * GAP_SECONDS)
    for frequency in CHIME_NOTES_HZ:
        step = 2 * math.pi * frequency / rate
        samples.extend(
            round(PEAK * math.exp(-DECAY_PER_SECOND * n / rate) * math.sin(step * n))
            for n in range(note)
        )
        samples.extend([0] * gap)
    return samples.tobytes()
