"""The demo's ears: it hears what is said, within a closed vocabulary.

No speech model can be downloaded here, and none ships in a package for both
Mandarin and English, so the demo recognises by example: it speaks each phrase
of its vocabulary with ``espeak-ng`` (the voices the simulator and the demo's
own speech use), keeps the MFCC frames of each, and answers an upload with the
phrase whose frames are nearest by dynamic time warping, if that phrase is near
enough; anything else (silence, noise, a sentence it does not know) is heard as
nothing, an empty transcript. Like a recogniser trained on one speaker, it knows
only the voices it learnt from (the simulator's): other voices, even espeak-ng's
female variant, are heard as nothing.

The vocabulary (each phrase is the transcript it answers):

* the light: 打开灯, 关灯, 打开客厅灯, 关闭客厅灯, 打开演示灯, 关掉演示灯,
  "Turn on the light", "Turn off the light", "Turn on the demo light",
  "Turn off the demo light", "Turn on the living room light" (the simulator's
  default English utterance; 打开客厅灯 is its Chinese one), "Turn off the living
  room light";
* the weather: 今天天气怎么样, "What's the weather like today?";
* the time: 现在几点, "What time is it?";
* a joke: 讲个笑话, "Tell me a joke.";
* greetings and thanks: 你好, 谢谢, "Hello", "Thank you".

Chinese phrases are learnt in espeak-ng's Mandarin voice; English ones in its
English voices and also in the Mandarin one, which is what the simulator speaks
English with in its default language (zh-CN).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
import functools
import logging
from typing import Final

import numpy as np
from numpy.typing import NDArray

from .audio import SynthesisError, run_tool, to_mono, wav_to_mono

LOGGER: Final = logging.getLogger(__name__)

type Frames = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Phrase:
    """A phrase of the vocabulary and the espeak-ng voices it is learnt in."""

    text: str
    voices: tuple[str, ...]


_ZH: Final = ("cmn",)
_EN: Final = ("en", "en-us", "cmn")

VOCABULARY: Final[tuple[Phrase, ...]] = (
    Phrase("打开灯", _ZH),
    Phrase("关灯", _ZH),
    Phrase("打开客厅灯", _ZH),
    Phrase("关闭客厅灯", _ZH),
    Phrase("打开演示灯", _ZH),
    Phrase("关掉演示灯", _ZH),
    Phrase("今天天气怎么样", _ZH),
    Phrase("现在几点", _ZH),
    Phrase("讲个笑话", _ZH),
    Phrase("你好", _ZH),
    Phrase("谢谢", _ZH),
    Phrase("Turn on the light", _EN),
    Phrase("Turn off the light", _EN),
    Phrase("Turn on the demo light", _EN),
    Phrase("Turn off the demo light", _EN),
    Phrase("Turn on the living room light", _EN),
    Phrase("Turn off the living room light", _EN),
    Phrase("What's the weather like today?", _EN),
    Phrase("What time is it?", _EN),
    Phrase("Tell me a joke.", _EN),
    Phrase("Hello", _EN),
    Phrase("Thank you", _EN),
)

SAMPLE_RATE: Final = 16000
FRAME: Final = 400  # 25 ms
HOP: Final = 160  # 10 ms
FFT_SIZE: Final = 512
MEL_BANDS: Final = 26
CEPSTRA: Final = 13
# A frame is speech when within this many dB of the loudest frame, and louder
# than the floor; what is quieter at both ends is trimmed.
SPEECH_RANGE_DB: Final = 35.0
SPEECH_FLOOR_DBFS: Final = -55.0
MIN_SPEECH_FRAMES: Final = 15
# Mel energies are floored this far below the loudest: the digital silence
# between espeak's words would otherwise weigh more than the words.
ENERGY_RANGE_DB: Final = 50.0
# A match is accepted under this DTW distance (mean MFCC distance along the
# path); see tests/fake_provider/test_listener.py for the measured margins.
MATCH_THRESHOLD: Final = 15.0


# --------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------


@functools.cache
def _mel_filters() -> Frames:
    """Return the triangular mel filterbank (``MEL_BANDS`` x FFT bins)."""

    def mel(hz: NDArray[np.float64]) -> NDArray[np.float64]:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    edges_mel = np.linspace(mel(np.array(80.0)), mel(np.array(7600.0)), MEL_BANDS + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    bins = np.floor((FFT_SIZE + 1) * edges_hz / SAMPLE_RATE).astype(int)
    filters = np.zeros((MEL_BANDS, FFT_SIZE // 2 + 1))
    for band in range(MEL_BANDS):
        low, centre, high = bins[band : band + 3]
        filters[band, low:centre] = (np.arange(low, centre) - low) / max(
            centre - low, 1
        )
        filters[band, centre:high] = (high - np.arange(centre, high)) / max(
            high - centre, 1
        )
    return filters


@functools.cache
def _dct_matrix() -> Frames:
    """Return the DCT-II rows that turn log mel energies into cepstra."""
    bands = np.arange(MEL_BANDS)
    rows = np.arange(CEPSTRA)[:, None]
    return np.cos(np.pi * rows * (2 * bands + 1) / (2 * MEL_BANDS))


def _frames(samples: NDArray[np.float64]) -> Frames:
    count = 1 + (len(samples) - FRAME) // HOP
    index = np.arange(FRAME)[None, :] + HOP * np.arange(count)[:, None]
    return samples[index]


def features(pcm: bytes) -> Frames | None:
    """Return the MFCC frames of the speech in 16 kHz mono s16le ``pcm``.

    Cepstral mean normalisation and dropping c0 make them blind to loudness and
    to a fixed colouring of the channel. ``None`` when there is no speech: too
    short, or nothing louder than the floor.
    """
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2") / 32768.0
    if len(samples) < FRAME + HOP * MIN_SPEECH_FRAMES:
        return None
    frames = _frames(samples.astype(np.float64))
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(
        (level > level.max() - SPEECH_RANGE_DB) & (level > SPEECH_FLOOR_DBFS)
    )
    if len(loud) == 0 or loud[-1] - loud[0] + 1 < MIN_SPEECH_FRAMES:
        return None
    speech = frames[loud[0] : loud[-1] + 1]
    emphasised = speech - 0.97 * np.concatenate([speech[:, :1], speech[:, :-1]], axis=1)
    spectrum = np.abs(np.fft.rfft(emphasised * np.hamming(FRAME), FFT_SIZE)) ** 2
    mel = spectrum @ _mel_filters().T
    log_mel = np.log(mel + mel.max() * 10 ** (-ENERGY_RANGE_DB / 10))
    cepstra = log_mel @ _dct_matrix().T
    cepstra = cepstra[:, 1:]
    normalised: Frames = cepstra - cepstra.mean(axis=0)
    return normalised


@dataclass(frozen=True, slots=True)
class TemplateBank:
    """The features of many utterances, padded to one length to be matched at once.

    Attributes:
        texts: What each utterance says.
        frames: Their frames, ``(utterances, longest, cepstra)``; zeros after
            each one's end.
        lengths: How many frames each has.
    """

    texts: tuple[str, ...]
    frames: NDArray[np.float64]
    lengths: NDArray[np.int64]

    @classmethod
    def of(cls, templates: Sequence[tuple[str, Frames]]) -> TemplateBank:
        """Return the bank of ``(text, frames)`` pairs."""
        longest = max(len(frames) for _, frames in templates)
        stacked = np.zeros((len(templates), longest, CEPSTRA - 1))
        for index, (_, frames) in enumerate(templates):
            stacked[index, : len(frames)] = frames
        lengths = np.array([len(frames) for _, frames in templates], dtype=np.int64)
        return cls(tuple(text for text, _ in templates), stacked, lengths)

    def distances(self, query: Frames) -> NDArray[np.float64]:
        """Return the DTW distance of ``query`` to every utterance of the bank.

        The distance is the mean frame distance along the best warping, with
        symmetric steps of slopes between 1/2 and 2 (Sakoe and Chiba): neither
        utterance may be more than twice as fast as the other anywhere, so a
        short word cannot match a long sentence (``inf`` then). All utterances
        are warped at once, row by row of the query, keeping three rows: memory
        stays small whatever the upload's length.
        """
        count, longest = self.lengths.size, self.frames.shape[1]
        rows = len(query)
        unreachable = np.full((count, longest), np.inf)
        if rows > 2 * longest:
            return np.full(count, np.inf)
        above = self._row_cost(query[0])
        before, previous = unreachable, unreachable.copy()
        previous[:, 0] = 2 * above[:, 0]
        for row in range(1, rows):
            current = self._row_cost(query[row])
            total = unreachable.copy()
            total[:, 1:] = previous[:, :-1] + 2 * current[:, 1:]
            np.minimum(
                total[:, 2:],
                previous[:, :-2] + 2 * current[:, 1:-1] + current[:, 2:],
                out=total[:, 2:],
            )
            np.minimum(
                total[:, 1:],
                before[:, :-1] + 2 * above[:, 1:] + current[:, 1:],
                out=total[:, 1:],
            )
            before, previous, above = previous, total, current
        ends = previous[np.arange(count), self.lengths - 1]
        distances: NDArray[np.float64] = ends / (rows + self.lengths)
        return distances

    def _row_cost(self, frame: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return the distances of one query frame to every frame of the bank."""
        cost: NDArray[np.float64] = np.sqrt(((self.frames - frame) ** 2).sum(axis=2))
        cost[np.arange(self.frames.shape[1])[None, :] >= self.lengths[:, None]] = np.inf
        return cost


# --------------------------------------------------------------------------
# The listener
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heard:
    """What the listener made of an upload.

    Attributes:
        text: The phrase heard, or ``""`` for nothing it knows.
        nearest: The nearest phrase, accepted or not (``""`` if no speech).
        distance: Its DTW distance (``inf`` if no speech).
    """

    text: str
    nearest: str
    distance: float


class Listener:
    """Recognises the phrases of a vocabulary in uploads (see the module doc).

    The templates are made once, on first use or by `prepare`, and shared by
    every listener of the process with the same vocabulary.
    """

    def __init__(
        self,
        espeak: str | None,
        vocabulary: Sequence[Phrase] = VOCABULARY,
        threshold: float = MATCH_THRESHOLD,
    ) -> None:
        """Listen for ``vocabulary``, learnt with the ``espeak-ng`` at ``espeak``.

        Without espeak-ng (``None``) nothing can be learnt and nothing is heard.
        """
        self.espeak = espeak
        self.vocabulary = tuple(vocabulary)
        self.threshold = threshold
        self._lock = asyncio.Lock()

    async def prepare(self) -> None:
        """Learn the vocabulary now rather than at the first upload.

        A vocabulary that cannot be learnt (espeak-ng failed) is logged; the
        listener then hears nothing.
        """
        await self._templates()

    async def _templates(self) -> TemplateBank | None:
        """Return the learnt vocabulary; ``None`` when it cannot be learnt."""
        async with self._lock:
            if self.espeak is None:
                return None
            key = (self.espeak, self.vocabulary)
            if (learnt := _LEARNT.get(key)) is None:
                try:
                    learnt = await learn(self.espeak, self.vocabulary)
                except SynthesisError as err:
                    LOGGER.warning("The demo cannot learn its vocabulary: %s", err)
                    self.espeak = None
                    return None
                _LEARNT[key] = learnt
        return learnt

    async def hear(self, pcm: bytes, rate: int, channels: int, width: int) -> Heard:
        """Return what is said in ``pcm`` (integer PCM of any rate and channels)."""
        templates = await self._templates()
        if templates is None:
            LOGGER.warning("Without espeak-ng the demo cannot listen: heard nothing")
            return Heard("", "", float("inf"))
        return await asyncio.to_thread(
            self._match, templates, pcm, rate, channels, width
        )

    def _match(
        self, templates: TemplateBank, pcm: bytes, rate: int, channels: int, width: int
    ) -> Heard:
        """Return what is heard (in a worker thread: it takes tens of ms)."""
        query = features(to_mono(pcm, rate, channels, width, rate_out=SAMPLE_RATE))
        if query is None:
            return Heard("", "", float("inf"))
        distances = templates.distances(query)
        best = int(np.argmin(distances))
        nearest, distance = templates.texts[best], float(distances[best])
        text = nearest if distance < self.threshold else ""
        return Heard(text, nearest, distance)


_LEARNT: dict[tuple[str, tuple[Phrase, ...]], TemplateBank] = {}


async def learn(espeak: str, vocabulary: Sequence[Phrase]) -> TemplateBank:
    """Speak every phrase in each of its voices; return their features.

    Raises:
        SynthesisError: espeak-ng failed, or spoke no speech for a phrase.
    """
    jobs = [
        spoken_features(espeak, phrase.text, voice)
        for phrase in vocabulary
        for voice in phrase.voices
    ]
    texts = [phrase.text for phrase in vocabulary for _ in phrase.voices]
    learnt = await asyncio.gather(*jobs)
    return TemplateBank.of(list(zip(texts, learnt, strict=True)))


async def spoken_features(espeak: str, text: str, voice: str) -> Frames:
    """Return the features of ``text`` spoken by espeak-ng in ``voice``."""
    wav = await run_tool((espeak, "--stdout", "-v", voice), (text,), b"")
    try:
        pcm = await asyncio.to_thread(wav_to_mono, wav, SAMPLE_RATE)
    except ValueError as err:
        raise SynthesisError(f"espeak-ng wrote no usable WAV: {err}") from err
    frames = await asyncio.to_thread(features, pcm)
    if frames is None:
        raise SynthesisError(f"espeak-ng spoke no speech for {text!r} ({voice})")
    return frames
