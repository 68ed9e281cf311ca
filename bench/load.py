"""Load benchmark: N simulated devices converse with the device server at once.

The machine's cores are shared by Home Assistant, the provider and the devices,
so each runs in a process of its own and what Home Assistant costs is measured
on its own. For each step (a device count) this process starts, fresh:

* a Home Assistant process (bench/harness.py: the test instance with its HTTP
  server on 127.0.0.1, this integration's STT, agent and TTS entities, the
  preferred pipeline of them, N paired device entries, the server's session
  limit raised to N); it is the one measured, and it starts:
* a provider process: the local OpenAI-compatible server
  (tests/fake_provider.py) with bench/latency.py's timings: 250 ms to the first
  token, 30 tokens a second, 150 ms to the first audio byte of speech, which
  then streams faster than real time; the speech lasts 0.22 s per Chinese
  character, as a real voice (and the speaker's subtitle clock) does, so the
  120-character reply is 26 s of audio (``--seconds-per-char 0.1`` gives the
  test server's default, under which the 0.3 s first clause "好的，" plays out
  before the next one is synthesized: one underrun per reply, at any load);
* a devices process: the N simulated devices (simulator/device.py).

Each device connects (hello, MCP); once all are connected and idle, the memory
per idle connection is taken: the growth of Home Assistant's resident memory
(RSS) and of the Python allocations traced meanwhile (tracemalloc), divided by
N. Then the devices converse in a loop, their starts staggered over ``--ramp``
seconds (by default about one turn, so that turns are spread evenly rather than
in step), for ``--seconds`` seconds (a turn begun before the end finishes):
listen start (auto), the utterance (tests/fixtures/zh_turn_on_the_light.wav
after 1 s of silence) as 60 ms Opus frames at real-time pace, then silence until
``tts start``, then the reply until ``tts stop``; the next turn follows at once,
as the firmware's auto mode does.

Reported:

* sessions: completed turns (transcript seen, audio received, ``tts stop``),
  and failures (timeouts, disconnections, wrong transcripts, no audio);
* end of speech -> first audio: from HA's VAD end of speech (the turn's
  ``speech_ended_at``) to the first Opus frame at the device (one monotonic
  clock for all processes), p50 and p95, split into the answer's first clause
  (STT, agent), the TTS engine's first PCM, and the downlink;
* underruns, server side (``session.playback.downlink.stats``: a reply's downlink ran
  dry and restarted with a new prebuffer; late frames: sent > 20 ms after their
  due time) and device side (a frame arrived after the device would have played
  everything before it: a gap in playback, on a 60 ms playback clock started by
  the reply's first frame);
* CPU: each process's CPU time over the load window (from ``/proc``), as a share
  of one core, and the whole machine's; CPU per active stream = Home
  Assistant's CPU seconds divided by stream-seconds, a stream being one device
  in a turn (listen start to ``tts stop``): the share of a core one conversing
  device costs;
* the lag of each event loop (a 50 ms timer's overshoot), how busy Home
  Assistant's loop thread was, and what limited the step.

The last line is ``load: N devices, X underruns, p95 first audio Y ms``
(server-side underruns). ``--sweep 10,25,50,100`` runs each N in turn, prints a
table, where it degrades and what limits it, and ends with one such line per N.
``--profile`` prints the top of a profile of Home Assistant's event loop during
the load (cProfile: it slows the loop down a lot).

Run from the repository root: ``python bench/load.py [--devices N]
[--seconds S] [--ramp S] [--sweep N,N,...] [--seconds-per-char S]
[--profile]``. Linux only (``/proc``).
"""

import argparse
import asyncio
from collections import defaultdict
from collections.abc import Sequence
import contextlib
from dataclasses import asdict, dataclass, field
import gc
import logging
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
import os
from pathlib import Path
import statistics
import sys
import threading
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import (
    REPLY,
    TOKENS_PER_S,
    TRANSCRIPT,
    TTFT_S,
    TTS_FIRST_BYTE_S,
    UTTERANCE,
    PairedDevice,
    ProviderEndpoint,
    free_port,
    percentile,
    scripted_reply,
)

from custom_components.xiaozhi.protocol.codec import OpusEncoder, parse_wav
from simulator.device import DEFAULT_CLIENT_ID, SimulatedDevice
from simulator.mqtt_device import MqttSimulatedDevice

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

    from custom_components.xiaozhi.device.session import DeviceSession
    from custom_components.xiaozhi.voice.turn import VoiceTurn

FRAME_S = 0.06
FRAME_MS = 60
UPLINK_RATE = 16000
# A Mandarin voice speaks about 4.5 characters a second (voice/speaking.py's estimate).
SPEECH_SECONDS_PER_CHAR = 0.22
LEAD_SILENCE_S = 1.0
# The firmware streams until tts start; past this much silence the device waits.
MAX_TRAILING_SILENCE_S = 5.0
# The device plays from a queue of at most 40 packets (audio_service.h).
DEVICE_QUEUE_FRAMES = 40
TURN_TIMEOUT_S = 60.0
CONNECT_CONCURRENCY = 10
IDLE_SETTLE_S = 1.0
IDLE_CPU_S = 3.0
LOAD_START_DELAY_S = 0.5
WATCH_INTERVAL_S = 0.1
LAG_INTERVAL_S = 0.05
# An event loop late by more than this makes a frame late past its tolerance.
STALL_S = 0.1
PROCESS_TIMEOUT_S = 60.0
# A sweep step degrades when its p95 grows this much over the smallest step's.
DEGRADED_P95_FACTOR = 1.5
DEGRADED_P95_MARGIN_S = 0.25
SATURATED_CORE = 0.85
# Timers this late at p95 mean the loop works in bursts that delay every hop.
LAGGING_LOOP_S = 0.05


# ---------------------------------------------------------------- measures


@dataclass(slots=True)
class Playback:
    """The device's speaker: plays each frame 60 ms, from when it arrives.

    A frame arriving after everything before it has been played is a gap in the
    audio (an underrun); more than 40 frames waiting overflow the device's queue.
    """

    frames: int = 0
    first_at: float | None = None
    gaps: int = 0
    max_gap: float = 0.0
    overflows: int = 0
    _play_end: float = 0.0

    def arrived(self, now: float) -> None:
        """Count one frame arriving at ``now``."""
        if self.first_at is None:
            self.first_at = self._play_end = now
        elif now > self._play_end:
            self.gaps += 1
            self.max_gap = max(self.max_gap, now - self._play_end)
            self._play_end = now
        self._play_end += FRAME_S
        if self._play_end - now > DEVICE_QUEUE_FRAMES * FRAME_S:
            self.overflows += 1
        self.frames += 1


@dataclass(slots=True)
class DeviceTurn:
    """One turn as the device saw it (times on the shared monotonic clock)."""

    mac: str
    listen_at: float
    transcript: str | None = None
    first_audio_at: float | None = None
    ended_at: float = 0.0
    frames: int = 0
    gaps: int = 0
    max_gap: float = 0.0
    overflows: int = 0
    error: str | None = None

    @property
    def failure(self) -> str | None:
        """Return why the turn failed, or None."""
        if self.error is not None:
            return self.error
        if self.transcript != TRANSCRIPT:
            return f"transcript {self.transcript!r}"
        if not self.frames:
            return "no audio"
        return None


@dataclass(frozen=True, slots=True)
class ServerTurn:
    """One turn as Home Assistant saw it."""

    mac: str
    speech_ended_at: float | None
    speech_started_at: float | None
    first_pcm_at: float | None


class LoopLag:
    """Samples how late a periodic timer of the running event loop fires.

    Attributes:
        samples: Every lateness, in seconds.
        stalls: ``(start, end)`` of each lateness over ``STALL_S``.
    """

    def __init__(self) -> None:
        """Start with no samples."""
        self.samples: list[float] = []
        self.stalls: list[tuple[float, float]] = []

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            due = time.monotonic() + LAG_INTERVAL_S
            await asyncio.sleep(LAG_INTERVAL_S)
            now = time.monotonic()
            self.samples.append(now - due)
            if now - due > STALL_S:
                self.stalls.append((due, now))


def shared_stalls(
    stalls: Sequence[tuple[float, float]], others: Sequence[tuple[float, float]]
) -> int:
    """Return how many stalls overlap one of another process's stalls."""
    return sum(
        any(
            start < other_end and other_start < end for other_start, other_end in others
        )
        for start, end in stalls
    )


def machine_busy_seconds() -> float:
    """Return the CPU time all processes of the machine used so far, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    # guest time is already counted in user time.
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """Return the user + system CPU time of a process (or one of its threads)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    stat = Path(path).read_text()
    fields_after_name = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields_after_name[11]), int(fields_after_name[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Return the resident memory of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# ---------------------------------------------------------------- provider process


def provider_process(conn: Connection, seconds_per_char: float) -> None:
    """Serve the scripted provider until told to stop (a process of its own)."""
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve_provider(conn, seconds_per_char))


async def _serve_provider(conn: Connection, seconds_per_char: float) -> None:
    from fake_provider import FakeProvider

    async with FakeProvider() as provider:
        provider.default_reply = scripted_reply()
        provider.default_transcript = TRANSCRIPT
        provider.speech.first_byte_delay = TTS_FIRST_BYTE_S
        provider.speech.seconds_per_char = seconds_per_char
        conn.send(
            {
                "base_url": provider.base_url,
                "api_key": provider.api_key,
                "models": list(provider.models),
            }
        )
        counts: dict[str, int] = defaultdict(int)
        lag = LoopLag()
        background = [
            asyncio.create_task(_count_requests(provider, counts)),
            asyncio.create_task(lag.run()),
        ]
        await asyncio.to_thread(conn.recv)
        for task in background:
            task.cancel()
        _count(provider, counts)
        conn.send({"requests": dict(counts), "lag": lag.samples})


async def _count_requests(provider: Any, counts: dict[str, int]) -> None:
    """Count the provider's requests, dropping its records, which would only grow."""
    while True:
        await asyncio.sleep(1.0)
        _count(provider, counts)


def _count(provider: Any, counts: dict[str, int]) -> None:
    for request in provider.requests:
        counts[request.path.removeprefix("/v1/")] += 1
        # The OpenAI SDK numbers its retries of a request.
        if request.headers.get("x-stainless-retry-count", "0") != "0":
            counts["retries"] += 1
    for records in (
        provider.requests,
        provider.streams,
        provider.transcriptions,
        provider.speech_requests,
    ):
        records.clear()


# ---------------------------------------------------------------- devices process


@dataclass(frozen=True, slots=True)
class Uplink:
    """What every device says: Opus packets, encoded once for all."""

    speech: list[bytes]
    silence: bytes

    @classmethod
    def build(cls) -> Uplink:
        """Encode the utterance after a lead silence, and one frame of silence."""
        wav = parse_wav(UTTERANCE.read_bytes())
        assert wav.rate == UPLINK_RATE
        lead = bytes(round(UPLINK_RATE * LEAD_SILENCE_S) * 2)
        encoder = OpusEncoder(UPLINK_RATE, FRAME_MS)
        speech = encoder.encode(lead + wav.pcm) + encoder.flush()
        silence_encoder = OpusEncoder(UPLINK_RATE, FRAME_MS)
        [silence] = silence_encoder.encode(bytes(UPLINK_RATE * FRAME_MS // 1000 * 2))
        return cls(speech, silence)

    def packets(self) -> list[bytes]:
        """Return the packets of one turn: speech, then the most silence sent."""
        trailing = round(MAX_TRAILING_SILENCE_S / FRAME_S)
        return self.speech + [self.silence] * trailing


if TYPE_CHECKING:
    _DeviceBase = SimulatedDevice
else:
    _DeviceBase = object


class Conversing(_DeviceBase):
    """Converses in a loop and times what it hears, on either transport."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the device; see `SimulatedDevice`."""
        super().__init__(*args, **kwargs)
        self.turn = DeviceTurn(self.mac, 0.0)
        self.playback = Playback()
        self._tts_started = asyncio.Event()
        self._tts_stopped = asyncio.Event()

    async def converse(self, uplink: Uplink) -> DeviceTurn:
        """Say the utterance and hear the reply to its end; return the turn."""
        self.pending_messages()  # nobody reads them: keep the inbox empty
        self.turn = turn = DeviceTurn(self.mac, time.monotonic())
        self.playback = Playback()
        self._tts_started.clear()
        self._tts_stopped.clear()
        try:
            await self.listen_start("auto")
        except ConnectionError as err:
            turn.error = f"send failed: {err}"
            return self._end_turn()
        talking = asyncio.create_task(self._talk(uplink))
        try:
            await self._until_reply_end()
        finally:
            talking.cancel()
            await asyncio.gather(talking, return_exceptions=True)
        if self.closed:
            turn.error = f"disconnected (code {self.close_code} {self.close_reason})"
        elif not self._tts_stopped.is_set():
            turn.error = "timeout"
            await self._abandon_reply()
        return self._end_turn()

    async def _talk(self, uplink: Uplink) -> None:
        """Stream the packets at real-time pace until the device must listen."""
        start = time.monotonic()
        for index, packet in enumerate(uplink.packets()):
            delay = start + index * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._tts_started.is_set():
                return
            try:
                await self.send_opus(packet, timestamp=index * FRAME_MS)
            except ConnectionError:
                return

    async def _until_reply_end(self) -> None:
        waits = {
            asyncio.create_task(self._tts_stopped.wait()),
            asyncio.create_task(self.wait_disconnected()),
        }
        _, pending = await asyncio.wait(
            waits, timeout=TURN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _abandon_reply(self) -> None:
        """Abort a reply that took too long, as a user pressing the button would."""
        try:
            await self.abort()
            async with asyncio.timeout(5.0):
                await self._tts_stopped.wait()
        except ConnectionError, TimeoutError:
            pass

    def _end_turn(self) -> DeviceTurn:
        turn, playback = self.turn, self.playback
        turn.ended_at = time.monotonic()
        turn.first_audio_at = playback.first_at
        turn.frames = playback.frames
        turn.gaps = playback.gaps
        turn.max_gap = playback.max_gap
        turn.overflows = playback.overflows
        return turn

    async def _on_json(self, message: dict[str, Any]) -> None:
        kind, state = message.get("type"), message.get("state")
        if kind == "stt":
            self.turn.transcript = message.get("text")
        elif kind == "tts" and state == "start":
            self._tts_started.set()
        elif kind == "tts" and state == "stop" and self._tts_started.is_set():
            self._tts_stopped.set()
        await super()._on_json(message)

    def _heard(self, now: float, played: int) -> None:
        if len(self.received_audio) > played:
            self.playback.arrived(now)
            self.received_audio.clear()  # counted, not kept


class LoadDevice(Conversing, SimulatedDevice):
    """A device on WebSocket."""

    async def _on_binary(self, data: bytes) -> None:
        now = time.monotonic()
        played = len(self.received_audio)
        await super()._on_binary(data)
        self._heard(now, played)


class MqttLoadDevice(Conversing, MqttSimulatedDevice):
    """A device on MQTT+UDP: connected while idle, a hello opens its audio."""

    def datagram_received(self, data: bytes) -> None:
        now = time.monotonic()
        played = len(self.received_audio)
        super().datagram_received(data)
        self._heard(now, played)


def devices_process(
    conn: Connection, url: str, devices: list[PairedDevice], transport: str
) -> None:
    """Connect the devices, then converse when told to (a process of its own)."""
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_run_devices(conn, url, devices, transport))


async def _mqtt_devices(
    http: aiohttp.ClientSession, url: str, paired: list[PairedDevice]
) -> list[Conversing]:
    """Check each device in for its MQTT section, as the firmware does at boot."""
    base = url.split("/xiaozhi/", maxsplit=1)[0]
    devices: list[Conversing] = []
    for device in paired:
        async with http.post(
            f"{base}/xiaozhi/ota/",
            headers={"Device-Id": device.mac, "Client-Id": DEFAULT_CLIENT_ID},
            json={},
        ) as response:
            section = (await response.json())["mqtt"]
        devices.append(MqttLoadDevice(section, mac=device.mac))
    return devices


async def _run_devices(
    conn: Connection, url: str, paired: list[PairedDevice], transport: str
) -> None:
    uplink = Uplink.build()
    await asyncio.to_thread(conn.recv)  # connect
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        devices: list[Conversing] = (
            await _mqtt_devices(http, url, paired)
            if transport == "mqtt"
            else [
                LoadDevice(http, url, token=device.token, mac=device.mac)
                for device in paired
            ]
        )
        refused = await _connect_all(devices)
        conn.send({"connected": len(devices) - len(refused), "refused": refused})
        plan: dict[str, float] = await asyncio.to_thread(conn.recv)
        lag = LoopLag()
        lag_task = asyncio.create_task(lag.run())
        connected = [device for device in devices if _connected(device)]
        turns = await asyncio.gather(
            *(
                _converse_until(device, uplink, plan, index / len(connected))
                for index, device in enumerate(connected)
            )
        )
        lag_task.cancel()
        conn.send(
            {
                "turns": [
                    asdict(turn) for device_turns in turns for turn in device_turns
                ],
                "lag": lag.samples,
                "stalls": lag.stalls,
            }
        )
        await asyncio.gather(*(device.close() for device in devices))


def _connected(device: Conversing) -> bool:
    if isinstance(device, MqttSimulatedDevice):
        return not device.closed
    return device.server_hello is not None


async def _connect_all(devices: Sequence[Conversing]) -> list[str]:
    """Connect every device, a few at a time; return why some could not.

    Over WebSocket a device connects with its hello; over MQTT it stays idle
    (connected, no audio channel) until it converses.
    """
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect(device: Conversing) -> str | None:
        async with gate:
            try:
                if isinstance(device, MqttSimulatedDevice):
                    await device.connect()
                else:
                    await device.open()
            except (ConnectionError, TimeoutError, aiohttp.ClientError) as err:
                return f"{device.mac}: {err!r}"
            return None

    results = await asyncio.gather(*(connect(device) for device in devices))
    return [result for result in results if result is not None]


async def _converse_until(
    device: Conversing, uplink: Uplink, plan: dict[str, float], offset: float
) -> list[DeviceTurn]:
    """Converse from a staggered start until the deadline (the last turn ends)."""
    start = plan["start"] + offset * plan["ramp"]
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    turns: list[DeviceTurn] = []
    while time.monotonic() < plan["deadline"] and not device.closed:
        if isinstance(device, MqttSimulatedDevice) and not device.channel_open:
            try:
                await device.hello()  # wake: the audio channel opens
            except (ConnectionError, TimeoutError) as err:
                turn = DeviceTurn(device.mac, time.monotonic())
                turn.error = f"no audio channel: {err!r}"
                turns.append(turn)
                break
        turns.append(await device.converse(uplink))
    return turns


# ---------------------------------------------------------------- Home Assistant side


class TurnWatcher:
    """Follows every device's sessions and turns from inside Home Assistant."""

    def __init__(self, runtimes: Sequence[Any]) -> None:
        """Watch the runtimes of the paired devices."""
        self._runtimes = runtimes
        self.sessions: set[DeviceSession] = set()
        self.turns: list[ServerTurn] = []
        self._current: dict[str, VoiceTurn] = {}

    async def run(self) -> None:
        """Poll until cancelled (turns last seconds: none is missed)."""
        while True:
            self.poll()
            await asyncio.sleep(WATCH_INTERVAL_S)

    def poll(self) -> None:
        """Note new sessions and turns."""
        from custom_components.xiaozhi.voice.session import VoiceSession

        for runtime in self._runtimes:
            session = runtime.session
            if session is None:
                continue
            self.sessions.add(session)
            handler = session.handler
            if not isinstance(handler, VoiceSession) or handler.last_turn is None:
                continue
            previous = self._current.get(runtime.mac)
            if handler.last_turn is not previous:
                if previous is not None:
                    self.turns.append(self._summary(runtime.mac, previous))
                self._current[runtime.mac] = handler.last_turn

    def finish(self) -> None:
        """Summarise the turns still current."""
        self.poll()
        for mac, turn in self._current.items():
            self.turns.append(self._summary(mac, turn))
        self._current.clear()

    @staticmethod
    def _summary(mac: str, turn: VoiceTurn) -> ServerTurn:
        return ServerTurn(
            mac,
            turn.speech_ended_at,
            turn.speech.started_at,
            turn.speech.first_audio_at,
        )


def pair_turns(
    device_turns: Sequence[DeviceTurn], server_turns: Sequence[ServerTurn]
) -> list[tuple[DeviceTurn, ServerTurn]]:
    """Pair each device turn that heard audio with HA's turn that answered it.

    HA's turn is the one whose speech ended between the device's listen start
    and the first audio it heard.
    """
    by_mac: dict[str, list[ServerTurn]] = defaultdict(list)
    for server in server_turns:
        by_mac[server.mac].append(server)
    pairs = []
    for device in device_turns:
        heard = device.first_audio_at
        if heard is None:
            continue
        inside = [
            server
            for server in by_mac[device.mac]
            if server.speech_ended_at is not None
            and device.listen_at <= server.speech_ended_at <= heard
        ]
        if inside:
            pairs.append((device, inside[-1]))
    return pairs


@dataclass(slots=True)
class FirstAudio:
    """End of speech -> first audio at the device, and its stages, per turn.

    Attributes:
        total: HA's VAD end of speech -> first Opus frame at the device.
        answer: End of speech -> first clause of the answer (STT, agent, splitter).
        tts: First clause -> its first PCM out of the TTS engine.
        downlink: First PCM -> first frame at the device (Opus, pacing, socket).
    """

    total: list[float] = field(default_factory=list)
    answer: list[float] = field(default_factory=list)
    tts: list[float] = field(default_factory=list)
    downlink: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, pairs: Sequence[tuple[DeviceTurn, ServerTurn]]) -> FirstAudio:
        """Measure the paired turns."""
        first = cls()
        for device, server in pairs:
            heard, ended = device.first_audio_at, server.speech_ended_at
            clause, pcm = server.speech_started_at, server.first_pcm_at
            assert heard is not None
            assert ended is not None
            first.total.append(heard - ended)
            if clause is not None and pcm is not None:
                first.answer.append(clause - ended)
                first.tts.append(pcm - clause)
                first.downlink.append(heard - pcm)
        return first


@dataclass(slots=True)
class StepResult:
    """Everything measured with N devices."""

    devices: int
    seconds: float
    ramp: float
    seconds_per_char: float
    max_sessions_raised_from: int | None = None
    connected: int = 0
    refused: list[str] = field(default_factory=list)
    turns: list[DeviceTurn] = field(default_factory=list)
    stages: FirstAudio = field(default_factory=FirstAudio)
    frames_sent: int = 0
    underruns: int = 0
    late_frames: int = 0
    max_lateness: float = 0.0
    window: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    idle_cpu: float = 0.0
    transport: str = "websocket"
    idle_rss: int = 0
    idle_traced: int = 0
    rss_after: int = 0
    ha_lag: list[float] = field(default_factory=list)
    devices_lag: list[float] = field(default_factory=list)
    ha_stalls: list[tuple[float, float]] = field(default_factory=list)
    devices_stalls: list[tuple[float, float]] = field(default_factory=list)
    machine_cpu: float = 0.0
    loop_cpu: float = 0.0
    provider_requests: dict[str, int] = field(default_factory=dict)
    provider_lag: list[float] | None = None
    connected_rss: int = 0
    warnings: int = 0
    profile: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepResult:
        """Rebuild a result sent by another process as `dataclasses.asdict`."""
        turns = [DeviceTurn(**turn) for turn in data.pop("turns")]
        stages = FirstAudio(**data.pop("stages"))
        return cls(**data, turns=turns, stages=stages)

    @property
    def failures(self) -> list[DeviceTurn]:
        """Return the failed turns."""
        return [turn for turn in self.turns if turn.failure is not None]

    @property
    def completed(self) -> int:
        """Return how many turns completed."""
        return len(self.turns) - len(self.failures)

    @property
    def stream_seconds(self) -> float:
        """Return the time devices spent in turns, summed."""
        return sum(turn.ended_at - turn.listen_at for turn in self.turns)

    @property
    def device_gaps(self) -> int:
        """Return the gaps in playback the devices heard."""
        return sum(turn.gaps for turn in self.turns)

    @property
    def first_audio(self) -> list[float]:
        """Return end of speech -> first audio at the device, per turn."""
        return self.stages.total

    @property
    def p95_first_audio(self) -> float | None:
        """Return the p95 of end of speech -> first audio, if any was measured."""
        return percentile(self.first_audio, 0.95) if self.first_audio else None


class WarningCounter(logging.Handler):
    """Counts the integration's warnings and errors."""

    def __init__(self) -> None:
        """Count from zero."""
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count one record."""
        self.count += 1


async def receive(conn: Connection, timeout: float) -> Any:  # noqa: ASYNC109
    """Return the next message of a child process, without blocking the loop."""
    if not await asyncio.to_thread(conn.poll, timeout):
        raise TimeoutError(f"no answer within {timeout:g} s")
    return conn.recv()


def device_plan(count: int) -> list[PairedDevice]:
    """Return ``count`` devices with their own MAC and token."""
    return [
        PairedDevice(
            f"02:4c:4f:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}",
            f"Zx8-load-{index:05d}-token_0123456789abcdefghij",
            f"Load device {index + 1}",
        )
        for index in range(count)
    ]


async def measure(count: int, args: argparse.Namespace) -> StepResult:
    """Run one load step with ``count`` devices in a fresh Home Assistant."""
    from harness import home_assistant

    from custom_components.xiaozhi.const import WEBSOCKET_PATH

    result = StepResult(count, args.seconds, args.ramp, args.seconds_per_char)
    result.transport = args.transport
    context = multiprocessing.get_context("spawn")
    paired = device_plan(count)
    port = free_port()
    url = f"http://127.0.0.1:{port}{WEBSOCKET_PATH}"
    provider_conn, provider_end = context.Pipe()
    devices_conn, devices_end = context.Pipe()
    provider = context.Process(
        target=provider_process,
        args=(provider_end, args.seconds_per_char),
        name="load-provider",
    )
    devices = context.Process(
        target=devices_process,
        args=(devices_end, url, paired, args.transport),
        name="load-devices",
    )
    provider.start()
    devices.start()
    try:
        endpoint = ProviderEndpoint(**await receive(provider_conn, PROCESS_TIMEOUT_S))
        async with home_assistant(endpoint, port, paired) as hass:
            await _measure_in(hass, result, devices_conn, (provider, devices), args)
            provider_conn.send("stop")
            served = await receive(provider_conn, PROCESS_TIMEOUT_S)
        result.provider_requests = served["requests"]
        result.provider_lag = served["lag"]
    finally:
        if result.provider_lag is None:
            with contextlib.suppress(OSError):
                provider_conn.send("stop")
        for process in (provider, devices):
            await asyncio.to_thread(process.join, PROCESS_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
    return result


async def _measure_in(
    hass: HomeAssistant,
    result: StepResult,
    devices_conn: Connection,
    children: tuple[BaseProcess, BaseProcess],
    args: argparse.Namespace,
) -> None:
    from harness import preferred_pipeline

    from custom_components.xiaozhi.const import (
        CONF_ENTRY_KIND,
        DOMAIN,
        ENTRY_KIND_DEVICE,
    )
    from custom_components.xiaozhi.device.runtime import DeviceRuntime

    await preferred_pipeline(hass)
    _allow_sessions(hass, result)
    if args.transport == "mqtt":
        _allow_check_ins(hass)
    runtimes = [
        entry.runtime_data
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.data.get(CONF_ENTRY_KIND) == ENTRY_KIND_DEVICE
        and isinstance(entry.runtime_data, DeviceRuntime)
    ]
    warnings = WarningCounter()
    logging.getLogger("custom_components.xiaozhi").addHandler(warnings)
    await _measure_idle(result, devices_conn, runtimes)

    loop_thread = threading.get_native_id()
    pids = {
        "Home Assistant": os.getpid(),
        "provider": _pid(children[0]),
        "devices": _pid(children[1]),
    }
    watcher = TurnWatcher(runtimes)
    lag = LoopLag()
    start = time.monotonic() + LOAD_START_DELAY_S
    plan = {"start": start, "ramp": args.ramp, "deadline": start + args.seconds}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    loop_before = cpu_seconds(os.getpid(), loop_thread)
    machine_before = machine_busy_seconds()
    background = [asyncio.create_task(watcher.run()), asyncio.create_task(lag.run())]
    profiler = _start_profile() if args.profile else None
    devices_conn.send(plan)
    report = await receive(devices_conn, args.seconds + TURN_TIMEOUT_S + 30)
    if profiler is not None:
        result.profile = _stop_profile(profiler)
    ended = time.monotonic()
    result.machine_cpu = machine_busy_seconds() - machine_before
    result.cpu = {
        name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()
    }
    result.loop_cpu = cpu_seconds(os.getpid(), loop_thread) - loop_before
    result.window = ended - start
    for task in background:
        task.cancel()
    watcher.finish()
    result.rss_after = rss_bytes(os.getpid())
    result.ha_lag = lag.samples
    result.devices_lag = report["lag"]
    result.ha_stalls = lag.stalls
    result.devices_stalls = report["stalls"]
    result.warnings = warnings.count
    logging.getLogger("custom_components.xiaozhi").removeHandler(warnings)
    result.turns = [DeviceTurn(**turn) for turn in report["turns"]]
    result.stages = FirstAudio.of(pair_turns(result.turns, watcher.turns))
    for session in watcher.sessions:
        stats = session.playback.downlink.stats
        result.frames_sent += stats.frames_sent
        result.underruns += stats.underruns
        result.late_frames += stats.late_frames
        result.max_lateness = max(result.max_lateness, stats.max_lateness)


def _pid(process: BaseProcess) -> int:
    assert process.pid is not None
    return process.pid


def _allow_sessions(hass: HomeAssistant, result: StepResult) -> None:
    """Let every device in: the server refuses more than its session limit."""
    import dataclasses

    from custom_components.xiaozhi.server.registry import async_get_server

    server = async_get_server(hass)
    limits = getattr(server, "limits", None)
    if limits is not None and limits.max_sessions < result.devices:
        result.max_sessions_raised_from = limits.max_sessions
        server.limits = dataclasses.replace(limits, max_sessions=result.devices)


def _allow_check_ins(hass: HomeAssistant) -> None:
    """Let every device check in at once: they all come from 127.0.0.1."""
    from custom_components.xiaozhi.server.ratelimit import RateLimiter
    from custom_components.xiaozhi.server.registry import async_get_server

    async_get_server(hass).http_limiter = RateLimiter(1e6, 10**6)


async def _measure_idle(
    result: StepResult, devices_conn: Connection, runtimes: Sequence[Any]
) -> None:
    """Connect the devices; note what the idle connections cost."""
    pid = os.getpid()
    gc.collect()
    rss_before = rss_bytes(pid)
    tracemalloc.start()
    devices_conn.send("connect")
    connected = await receive(devices_conn, PROCESS_TIMEOUT_S + result.devices)
    result.connected = connected["connected"]
    result.refused = connected["refused"]
    deadline = time.monotonic() + PROCESS_TIMEOUT_S
    while sum(1 for r in runtimes if r.connected) < result.connected:
        if time.monotonic() > deadline:
            raise TimeoutError("the connected devices' sessions are not ready")
        await asyncio.sleep(0.05)
    await asyncio.sleep(IDLE_SETTLE_S)
    gc.collect()
    result.idle_traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    result.connected_rss = rss_bytes(pid)
    result.idle_rss = result.connected_rss - rss_before
    cpu_before = cpu_seconds(pid)
    await asyncio.sleep(IDLE_CPU_S)
    result.idle_cpu = cpu_seconds(pid) - cpu_before


def _start_profile() -> Any:
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _stop_profile(profiler: Any) -> str:
    import io
    import pstats

    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return out.getvalue()


# ---------------------------------------------------------------- report


def kib(value: float) -> str:
    """Format bytes as KiB."""
    return f"{value / 1024:.0f} KiB"


def msec(value: float | None) -> str:
    """Format seconds as whole milliseconds."""
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def core_share(cpu: float, window: float) -> float:
    """Return CPU seconds over a window as a share of one core."""
    return cpu / window if window > 0 else 0.0


def summary_line(result: StepResult) -> str:
    """Return the benchmark's one-line verdict."""
    return (
        f"load: {result.devices} devices, {result.underruns} underruns, "
        f"p95 first audio {msec(result.p95_first_audio).removesuffix(' ms')} ms"
    )


def report_step(result: StepResult) -> None:
    """Print what one step measured."""
    n = result.devices
    print(
        f"Load: {n} simulated devices on 127.0.0.1, conversing for {result.seconds:g} s "
        f"(starts staggered over {result.ramp:g} s); provider: TTFT "
        f"{TTFT_S * 1000:.0f} ms, {TOKENS_PER_S:.0f} tokens/s, TTS "
        f"{TTS_FIRST_BYTE_S * 1000:.0f} ms to first byte, "
        f"{result.seconds_per_char:g} s of speech per character; "
        f"{len(REPLY)}-character reply per turn."
    )
    if result.max_sessions_raised_from is not None:
        print(
            f"  (the server's session limit, {result.max_sessions_raised_from}, was "
            f"raised to {n}: by default device {result.max_sessions_raised_from + 1} "
            "would be refused)"
        )
    print(f"Connected: {result.connected}/{n}" + _refusals(result))
    failures = result.failures
    print(
        f"Sessions completed: {result.completed}, failures: {len(failures)}"
        + _failure_kinds(failures)
        + f"; integration warnings logged: {result.warnings}"
    )
    latencies = result.first_audio
    if latencies:
        print(
            "End of speech (HA VAD) -> first audio at the device: "
            f"p50 {msec(statistics.median(latencies))}, "
            f"p95 {msec(percentile(latencies, 0.95))}, max {msec(max(latencies))} "
            f"(n={len(latencies)})"
        )
        for name, values in (
            ("end of speech -> first clause (STT, agent)", result.stages.answer),
            ("first clause -> first PCM (TTS engine)", result.stages.tts),
            ("first PCM -> first frame at the device", result.stages.downlink),
        ):
            if values:
                print(
                    f"  {name:<43} p50 {msec(statistics.median(values)):>7}, "
                    f"p95 {msec(percentile(values, 0.95)):>7}"
                )
    print(
        f"Downlink, server side: {result.frames_sent} frames, "
        f"{result.underruns} underruns, {result.late_frames} late frames "
        f"(> 20 ms), max lateness {msec(result.max_lateness)}"
    )
    frames = sum(turn.frames for turn in result.turns)
    max_gap = max((turn.max_gap for turn in result.turns), default=0.0)
    overflows = sum(turn.overflows for turn in result.turns)
    print(
        f"Downlink, device side: {frames} frames played, {result.device_gaps} gaps "
        f"in playback (longest {msec(max_gap)}), {overflows} queue overflows"
    )
    window = result.window
    shares = ", ".join(
        f"{name} {core_share(cpu, window):.0%}" for name, cpu in result.cpu.items()
    )
    ours = sum(result.cpu.values())
    print(
        f"CPU over the {window:.0f} s load window (share of one core): {shares}; "
        f"whole machine {core_share(result.machine_cpu, window):.0%} of "
        f"{os.cpu_count()} cores (other programs "
        f"{core_share(max(0.0, result.machine_cpu - ours), window):.0%})"
    )
    ha_cpu = result.cpu.get("Home Assistant", 0.0)
    stream_seconds = result.stream_seconds
    if stream_seconds:
        print(
            f"CPU per active stream: {ha_cpu / stream_seconds:.2%} of a core "
            f"(HA {ha_cpu:.1f} CPU s / {stream_seconds:.0f} stream-seconds; "
            f"{stream_seconds / window:.1f} streams active on average)"
        )
    if result.connected:
        print(
            f"Idle connections ({result.transport}): {result.connected}. "
            f"Memory per idle connection: {kib(result.idle_rss / result.connected)} "
            f"RSS, {kib(result.idle_traced / result.connected)} of Python "
            f"allocations; idle CPU "
            f"{core_share(result.idle_cpu, IDLE_CPU_S) / result.connected:.3%} "
            "of a core per connection"
        )
        growth = result.rss_after - result.connected_rss
        print(
            f"HA memory: {result.connected_rss / 2**20:.0f} MiB RSS with the devices "
            f"connected, {result.rss_after / 2**20:.0f} MiB after the load "
            f"({kib(growth / max(1, len(result.turns)))} per turn)"
        )
    requests = ", ".join(f"{path} {n}" for path, n in result.provider_requests.items())
    print(f"Provider requests: {requests}")
    for name, samples, stalls in (
        ("Home Assistant", result.ha_lag, result.ha_stalls),
        ("provider", result.provider_lag or [], []),
        ("devices", result.devices_lag, result.devices_stalls),
    ):
        if samples:
            print(
                f"Event loop lag, {name}: p50 {msec(statistics.median(samples))}, "
                f"p95 {msec(percentile(samples, 0.95))}, max {msec(max(samples))}, "
                f"{len(stalls)} stalls > {msec(STALL_S)}"
            )
            if name == "Home Assistant":
                print(
                    f"  its thread was busy {core_share(result.loop_cpu, window):.0%} "
                    "of the time"
                )
    if result.ha_stalls:
        shared = shared_stalls(result.ha_stalls, result.devices_stalls)
        print(
            f"  {shared} of Home Assistant's {len(result.ha_stalls)} stalls overlap "
            "one of the devices process (the machine stalled both, not HA alone)"
        )
    print(f"Limit: {limiting_factor(result)}")
    if result.profile:
        print("Profile of Home Assistant's event loop during the load:")
        print(result.profile)


def _refusals(result: StepResult) -> str:
    if not result.refused:
        return ""
    return f" (refused: {'; '.join(result.refused[:3])}...)"


def _failure_kinds(failures: Sequence[DeviceTurn]) -> str:
    kinds: dict[str, int] = defaultdict(int)
    for turn in failures:
        kinds[str(turn.failure).split(" (")[0]] += 1
    if not kinds:
        return ""
    return " (" + ", ".join(f"{kind}: {n}" for kind, n in kinds.items()) + ")"


def degraded(result: StepResult, baseline: StepResult) -> list[str]:
    """Return how a step is worse than the baseline (the smallest step)."""
    reasons = []
    if result.failures:
        reasons.append(f"{len(result.failures)} failed turns")
    if result.connected < result.devices:
        reasons.append(f"{result.devices - result.connected} devices not connected")
    base_rate = baseline.underruns / max(1, len(baseline.turns))
    if result.underruns / max(1, len(result.turns)) > base_rate + 0.1:
        reasons.append(
            f"{result.underruns / max(1, len(result.turns)):.1f} underruns per turn "
            f"(vs {base_rate:.1f})"
        )
    base_gaps = baseline.device_gaps / max(1, len(baseline.turns))
    if result.device_gaps / max(1, len(result.turns)) > base_gaps + 0.1:
        reasons.append(f"{result.device_gaps} gaps in the devices' playback")
    p95, base = result.p95_first_audio, baseline.p95_first_audio
    if p95 is not None and base is not None:
        limit = max(base * DEGRADED_P95_FACTOR, base + DEGRADED_P95_MARGIN_S)
        if p95 > limit:
            reasons.append(f"p95 first audio {msec(p95)} (vs {msec(base)})")
    return reasons


def limiting_factor(result: StepResult) -> str:
    """Say what limited the step, from the CPU shares and the loop's lag."""
    window = result.window
    shares = {name: core_share(cpu, window) for name, cpu in result.cpu.items()}
    loop = core_share(result.loop_cpu, window)
    machine = core_share(result.machine_cpu, window)
    cores = os.cpu_count() or 1
    lag = percentile(result.ha_lag, 0.95) if result.ha_lag else 0.0
    worst = max(result.ha_lag, default=0.0)
    for name in ("devices", "provider"):
        if shares.get(name, 0.0) >= SATURATED_CORE:
            return (
                f"the {name} process ({shares[name]:.0%} of a core): the load "
                "generator, not Home Assistant; these figures are unreliable"
            )
    if machine >= SATURATED_CORE * cores:
        return (
            f"the machine: {machine:.0%} of {cores} cores busy (Home Assistant "
            f"{shares.get('Home Assistant', 0.0):.0%})"
        )
    if loop >= SATURATED_CORE:
        return (
            f"Home Assistant's event loop: its thread is busy {loop:.0%} of the "
            "time, and it can use one core only"
        )
    if lag >= LAGGING_LOOP_S:
        return (
            f"Home Assistant's event loop, in bursts: its thread is busy {loop:.0%} "
            f"of the time on average, but late by {msec(lag)} at p95 ({msec(worst)} "
            "at worst); each of the many loop turns of a provider request (the "
            "STT upload, the LLM and TTS streams) waits behind the audio work of "
            "every device"
        )
    return (
        f"nothing: Home Assistant's event loop is busy {loop:.0%} of the time, "
        f"late by {msec(lag)} at p95"
    )


def report_sweep(results: Sequence[StepResult]) -> None:
    """Print the table of a sweep, where it degrades and what limits it."""
    print()
    print(
        f"{'devices':>7} {'turns':>6} {'fail':>5} {'underruns':>9} {'gaps':>5} "
        f"{'late':>6} {'p50 ms':>7} {'p95 ms':>7} {'HA cpu':>7} {'all cpu':>7} "
        f"{'cpu/str':>7} {'idle KiB':>8} {'py KiB':>6} {'lag p95':>8}"
    )
    for result in results:
        window = result.window
        ha = core_share(result.cpu.get("Home Assistant", 0.0), window)
        total = core_share(sum(result.cpu.values()), window)
        p50 = statistics.median(result.first_audio) if result.first_audio else None
        per_stream = result.cpu.get("Home Assistant", 0.0) / max(
            result.stream_seconds, 1e-9
        )
        lag = percentile(result.ha_lag, 0.95) if result.ha_lag else None
        print(
            f"{result.devices:>7} {len(result.turns):>6} {len(result.failures):>5} "
            f"{result.underruns:>9} {result.device_gaps:>5} {result.late_frames:>6} "
            f"{msec(p50).removesuffix(' ms'):>7} "
            f"{msec(result.p95_first_audio).removesuffix(' ms'):>7} "
            f"{ha:>7.0%} {total:>7.0%} {per_stream:>7.2%} "
            f"{result.idle_rss / max(1, result.connected) / 1024:>8.0f} "
            f"{result.idle_traced / max(1, result.connected) / 1024:>6.0f} "
            f"{msec(lag):>8}"
        )
    baseline = results[0]
    broken = next(
        (result for result in results[1:] if degraded(result, baseline)), None
    )
    if broken is None:
        print(f"No degradation up to {results[-1].devices} devices.")
    else:
        print(
            f"Breaking point: {broken.devices} devices "
            f"({'; '.join(degraded(broken, baseline))}; "
            f"baseline {baseline.devices} devices)"
        )
        print(f"Limit there: {limiting_factor(broken)}")
    if broken is not results[-1]:
        most = results[-1]
        print(f"Limit at {most.devices} devices: {limiting_factor(most)}")
    for result in results:
        print(summary_line(result))


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace) -> None:
    """Run the single step or the sweep and print the results."""
    counts = args.sweep or [args.devices]
    results = []
    for count in counts:
        result = run_step(count, args)
        results.append(result)
        report_step(result)
        if args.sweep:
            print(summary_line(result))
            print()
    if args.sweep:
        report_sweep(results)
    else:
        print(summary_line(results[0]))


def run_step(count: int, args: argparse.Namespace) -> StepResult:
    """Measure ``count`` devices with Home Assistant in a fresh process.

    Fresh, so that no step inherits the memory or the state of the one before.
    """
    context = multiprocessing.get_context("spawn")
    conn, child_end = context.Pipe()
    process = context.Process(
        target=step_process, args=(child_end, count, vars(args)), name="load-ha"
    )
    process.start()
    # Setup, pairing, connecting, the load and its last turns, with room to spare.
    limit = 3 * PROCESS_TIMEOUT_S + count + args.ramp + args.seconds + TURN_TIMEOUT_S
    try:
        outcome = conn.recv() if conn.poll(limit) else {"error": "no result in time"}
    except EOFError:
        outcome = {"error": "the Home Assistant process died"}
    process.join(PROCESS_TIMEOUT_S)
    if process.is_alive():
        process.terminate()
    if "error" in outcome:
        raise RuntimeError(f"{count} devices: {outcome['error']}")
    return StepResult.from_dict(outcome)


def step_process(conn: Connection, count: int, options: dict[str, Any]) -> None:
    """Run Home Assistant and one load step (a process of its own)."""
    logging.basicConfig(level=logging.ERROR)
    try:
        result = asyncio.run(measure(count, argparse.Namespace(**options)))
    except Exception as err:
        logging.getLogger(__name__).exception("The load step failed")
        conn.send({"error": repr(err)})
        return
    conn.send(asdict(result))


def device_counts(text: str) -> list[int]:
    """Parse ``10,25,50``: increasing positive counts."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(n <= 0 for n in counts) or counts != sorted(set(counts)):
        raise argparse.ArgumentTypeError("expected increasing positive counts")
    return counts


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--devices", type=int, default=50, help="simulated devices (default 50)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="how long devices start new turns (default 60)",
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=30.0,
        help="devices start over this many seconds (default 30, about a turn)",
    )
    parser.add_argument(
        "--transport",
        choices=["websocket", "mqtt"],
        default="websocket",
        help="how the devices connect (default websocket; mqtt: MQTT+UDP, idle "
        "devices stay connected without a session)",
    )
    parser.add_argument(
        "--sweep",
        type=device_counts,
        help="run each device count in turn, e.g. 10,25,50,100",
    )
    parser.add_argument(
        "--seconds-per-char",
        type=float,
        default=SPEECH_SECONDS_PER_CHAR,
        help="speech the provider answers per character of text (default 0.22)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile Home Assistant's event loop during the load (slows it)",
    )
    args = parser.parse_args()
    if min(args.devices, args.seconds, args.seconds_per_char) <= 0 or args.ramp < 0:
        parser.error(
            "--devices, --seconds and --seconds-per-char must be positive, "
            "--ramp not negative"
        )
    logging.basicConfig(level=logging.ERROR)
    run(args)


if __name__ == "__main__":
    main()
