"""End-of-utterance detection over real speech, as the server receives it.

The recordings (tests/fixtures/voice/SOURCES.md) are real human speech: a
Mandarin 你好 and an English LibriVox sentence. They reach the detector as a
device sends them: Opus at 16 kHz in 60 ms frames, decoded by our decoder, in
seeded microphone-like noise. Positions are audio seconds (deterministic), not
wall-clock times.
"""

from collections.abc import Sequence
from pathlib import Path
import random
import struct

import pytest

from custom_components.xiaozhi.protocol.codec import OpusDecoder, OpusEncoder, parse_wav
from custom_components.xiaozhi.voice.endpointing import (
    WINDOW_SAMPLES,
    End,
    Endpointer,
    EndpointSettings,
    Event,
    FinishedSpeaking,
    PossibleEnd,
    SpeechResumed,
    SpeechStarted,
    silero_model,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "voice"
RATE = 16000
# Labelled ends of speech (bench/recordings.py's rule) in the fixtures.
NIHAO_END_S = 0.62
LIBRIVOX_PAUSE_AT_S = 1.095  # the gap between "not" and "an"
LIBRIVOX_END_S = 2.74


def _samples(name: str) -> list[int]:
    pcm = parse_wav((FIXTURES / name).read_bytes()).pcm
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _scaled(samples: Sequence[int], peak_dbfs: float) -> list[float]:
    gain = 10 ** (peak_dbfs / 20) * 32767 / max(abs(s) for s in samples)
    return [s * gain for s in samples]


def _noise(seconds: float, rms_dbfs: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    sigma = 10 ** (rms_dbfs / 20) * 32767
    return [rng.gauss(0, sigma) for _ in range(round(seconds * RATE))]


def _stream(
    speech: Sequence[float],
    *,
    lead_s: float = 0.6,
    tail_s: float = 2.0,
    noise_dbfs: float = -58,
    seed: int = 1,
) -> tuple[list[bytes], float]:
    """Noise, speech, noise through the device's codec; returns frames and offset."""
    lead = round(lead_s * RATE)
    signal = _noise(lead_s + len(speech) / RATE + tail_s, noise_dbfs, seed)
    for i, value in enumerate(speech):
        signal[lead + i] += value
    clipped = [max(-32768, min(32767, round(v))) for v in signal]
    pcm = struct.pack(f"<{len(clipped)}h", *clipped)
    encoder, decoder = OpusEncoder(RATE, 60), OpusDecoder(RATE)
    return [decoder.decode(p) for p in encoder.encode(pcm) + encoder.flush()], lead_s


def _events(
    frames: Sequence[bytes], value: FinishedSpeaking = FinishedSpeaking.DEFAULT
) -> list[Event]:
    endpointer = Endpointer(
        EndpointSettings.for_finished_speaking(value), silero_model()
    )
    return [event for frame in frames for event in endpointer.feed(frame)]


def _kinds(events: Sequence[Event]) -> list[type]:
    return [type(e) for e in events]


def test_quiet_short_greeting_is_heard() -> None:
    """A 0.6 s 你好 at -30 dBFS (HA's VAD misses it in the bench) ends the turn."""
    speech = _scaled(_samples("zh_nihao_gcin5.wav"), -30)
    frames, offset = _stream(speech)
    events = _events(frames)
    assert _kinds(events) == [SpeechStarted, PossibleEnd, End]
    started, possible, end = events
    true_end = offset + NIHAO_END_S
    assert started.at < true_end
    assert true_end - 0.1 < possible.at < end.at
    assert isinstance(end, End)
    assert end.speech_until <= end.at


def test_pause_of_300_ms_is_taken_back_and_the_end_waits() -> None:
    """A 300 ms pause may start a speculation, never the final end."""
    samples = _samples("en_ill_disposed_librivox.wav")
    cut = round(LIBRIVOX_PAUSE_AT_S * RATE)
    gap = [0] * round(0.3 * RATE)
    speech = _scaled([*samples[:cut], *gap, *samples[cut:]], -12)
    frames, offset = _stream(speech, noise_dbfs=-55)
    events = _events(frames)
    true_end = offset + LIBRIVOX_END_S + 0.3
    pause_end = offset + LIBRIVOX_PAUSE_AT_S + 0.3
    (end,) = [e for e in events if isinstance(e, End)]
    assert end.at > true_end
    in_pause = [e for e in events if isinstance(e, PossibleEnd) and e.at < pause_end]
    assert in_pause, "the pause is long enough to speculate on"
    resumed = [e for e in events if isinstance(e, SpeechResumed)]
    assert resumed
    assert resumed[0].at > in_pause[0].at
    # Taken back before a reply could play (stt -> first audio is ~470 ms).
    assert resumed[0].at - in_pause[0].at < 0.47
    assert _kinds(events)[0] is SpeechStarted


def test_noise_alone_starts_nothing() -> None:
    frames, _ = _stream([], lead_s=0.0, tail_s=5.0, noise_dbfs=-45, seed=7)
    assert _events(frames) == []


def test_finished_speaking_orders_the_waits() -> None:
    """Aggressive ends sooner than default, relaxed later, on the same audio."""
    speech = _scaled(_samples("en_ill_disposed_librivox.wav"), -12)
    frames, _ = _stream(speech, tail_s=2.5)
    ends = {}
    for value in FinishedSpeaking:
        (end,) = [e for e in _events(frames, value) if isinstance(e, End)]
        ends[value] = end.at
    assert (
        ends[FinishedSpeaking.AGGRESSIVE]
        < ends[FinishedSpeaking.DEFAULT]
        < ends[FinishedSpeaking.RELAXED]
    )


def test_chunking_does_not_change_decisions() -> None:
    """The device's frames and odd-sized pieces of the same PCM decide alike."""
    speech = _scaled(_samples("zh_nihao_gcin5.wav"), -12)
    frames, _ = _stream(speech)
    pcm = b"".join(frames)
    pieces = [pcm[i : i + 333] for i in range(0, len(pcm), 333)]
    assert _events(pieces) == _events(frames)


class ScriptedModel:
    """A speech model whose ratings are given (the state machine's unit tests)."""

    def __init__(self, ratings: Sequence[float]) -> None:
        self.ratings = list(ratings)
        self.resets = 0

    def __call__(self, window: bytes, /) -> float:
        return self.ratings.pop(0) if self.ratings else 0.0

    def reset(self) -> None:
        self.resets += 1


LOUD = struct.pack(f"<{WINDOW_SAMPLES}h", *([3000, -3000] * (WINDOW_SAMPLES // 2)))
QUIET = struct.pack(f"<{WINDOW_SAMPLES}h", *([30, -30] * (WINDOW_SAMPLES // 2)))
SETTINGS = EndpointSettings(possible_end_s=0.096, end_s=0.32)


def _feed(endpointer: Endpointer, windows: Sequence[bytes]) -> list[Event]:
    return [e for w in windows for e in endpointer.feed(w)]


def test_one_loud_window_after_a_possible_end_is_a_click_not_speech() -> None:
    model = ScriptedModel([0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0])
    endpointer = Endpointer(SETTINGS, model)
    events = _feed(endpointer, [LOUD] * 3 + [QUIET] * 3 + [LOUD] + [QUIET] * 6)
    assert _kinds(events) == [SpeechStarted, PossibleEnd, End]
    # The click did not restart the silence: End is 10 windows after the speech.
    assert events[2].at == pytest.approx(13 * WINDOW_SAMPLES / RATE)


def test_resumed_speech_takes_the_possible_end_back() -> None:
    model = ScriptedModel([0.9, 0.9, 0.0, 0.0, 0.0, 0.8, 0.8, 0.6])
    endpointer = Endpointer(SETTINGS, model)
    events = _feed(endpointer, [LOUD] * 8 + [QUIET] * 11)
    assert _kinds(events) == [
        SpeechStarted,
        PossibleEnd,
        SpeechResumed,
        PossibleEnd,
        End,
    ]
    assert endpointer.ended
    assert endpointer.feed(LOUD * 4) == []


def test_snr_gate_ends_speech_the_model_still_rates_likely() -> None:
    """0.4 continues an utterance over loud audio, not at the room's floor."""
    ratings = [0.0] * 3 + [0.9] * 3 + [0.4] * 14
    loud = Endpointer(SETTINGS, ScriptedModel(ratings))
    assert _kinds(_feed(loud, [QUIET] * 3 + [LOUD] * 17)) == [SpeechStarted]
    gated = Endpointer(SETTINGS, ScriptedModel(ratings))
    events = _feed(gated, [QUIET] * 3 + [LOUD] * 3 + [QUIET] * 14)
    assert _kinds(events) == [SpeechStarted, PossibleEnd, End]


def test_reset_starts_a_new_utterance() -> None:
    model = ScriptedModel([0.9, 0.9] + [0.0] * 10 + [0.9, 0.9])
    endpointer = Endpointer(SETTINGS, model)
    assert _kinds(_feed(endpointer, [LOUD] * 12)) == [SpeechStarted, PossibleEnd, End]
    endpointer.reset()
    assert model.resets == 1
    assert not endpointer.in_utterance
    (started,) = _feed(endpointer, [LOUD] * 2)
    assert isinstance(started, SpeechStarted)
    assert started.at == pytest.approx(2 * WINDOW_SAMPLES / RATE)
    assert endpointer.in_utterance


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"possible_end_s": 0.5, "end_s": 0.2}, "possible_end_s"),
        ({"possible_end_s": 0.0, "end_s": 0.2}, "possible_end_s"),
        (
            {"possible_end_s": 0.1, "end_s": 0.2, "continue_threshold": 0.6},
            "continue_threshold",
        ),
    ],
)
def test_inconsistent_settings_are_rejected(
    kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        EndpointSettings(**kwargs)


def test_finished_speaking_keeps_has_seconds_and_rejects_others() -> None:
    ends = {
        v: EndpointSettings.for_finished_speaking(v).end_s for v in FinishedSpeaking
    }
    assert ends == {
        FinishedSpeaking.AGGRESSIVE: 0.25,
        FinishedSpeaking.DEFAULT: 0.7,
        FinishedSpeaking.RELAXED: 1.25,
    }
    assert EndpointSettings.for_finished_speaking("relaxed").possible_end_s > (
        EndpointSettings.for_finished_speaking("aggressive").possible_end_s
    )
    with pytest.raises(ValueError, match="sloppy"):
        EndpointSettings.for_finished_speaking("sloppy")
