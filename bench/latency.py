"""Benchmark: end of speech to first audio, our voice session vs. HA's stock pipeline.

Home Assistant runs in-process (pytest-homeassistant-custom-component's test
instance, with a temporary config directory and its HTTP server on a free
127.0.0.1 port), with this integration's STT, streaming conversation agent and
streaming-input TTS entities on the local OpenAI-compatible test server, which
simulates a provider: 250 ms to the first token, then 30 tokens a second (one
character per token), and 150 ms from a speech request to its first audio byte. Every run answers the same 120-character
Chinese reply to the same utterance (tests/fixtures/zh_turn_on_the_light.wav).

What is measured, all with one monotonic clock:

* ours: a simulated device connected over a real WebSocket sends the utterance
  as Opus (listen start, auto mode); the device's assist satellite runs the
  preferred pipeline up to the intent stage and speaks the reply itself. From
  the moment HA's VAD declared the end of speech (the pipeline's
  ``stt-vad-end``) to the moment the device received the first Opus frame of
  the reply. The device then aborts (the rest of the reply is not needed).
* stock: `async_pipeline_from_audio_stream` with the same pipeline and the same
  audio (as 16 kHz PCM), ``end_stage=TTS``: HA's own TTS stage, which streams
  text to the TTS engine after 60 characters. From ``stt-vad-end`` to the first
  PCM byte readable from the run's TTS stream (the token announced in
  ``run-start``, read from then on, as a streaming satellite would): what a
  stock satellite could start playing. No Opus, no network: the stock figure
  leaves out costs ours includes.
* bridge overhead (ours only): from the first clause received (the sentence
  splitter emitted the reply's first segment) to the first Opus frame at the
  device, split into the TTS engine's part (clause to first PCM out of HA's TTS
  stream) and ours (first PCM to first frame: encoding, pacing, WebSocket).

* end of speech in the audio -> first audio (auto mode, what a user feels):
  the device streams the utterance at real time (60 ms Opus frames, as a
  microphone delivers them, then the room's noise) and the clock starts at the
  utterance's labelled end of speech (``zh_espeak_control`` in
  bench/recordings.json), not at anyone's VAD. Ours: our endpointer, with the
  agent that controls the home (guessed on at the possible end, its tool calls
  held to the final end) and with a chat-only agent; stock: HA's pipeline with
  its own VAD (0.7 s, "default"), fed the same PCM at the same pace, to its first
  TTS PCM (its TTS stage waits for 60 characters); and ours with HA's VAD (as
  before issue 16). Cancelled speculations are counted.

* the same as *ours* over MQTT+UDP (the device's lasting MQTT link, its audio
  over UDP), beside the WebSocket figure; and wake (the device's hello) to
  listening (the server hello, when the device may stream): over WebSocket the
  device opens its socket first (as the firmware does on wake), over MQTT the
  link is open already.

The last lines are ``first audio ratio ours/stock: X.XX`` and
``first audio ratio mqtt/websocket: X.XX`` (medians).

Run from the repository root: ``python bench/latency.py [--runs N]
[--bridge-runs N] [--plot FILE.png]``.
"""

import argparse
import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
import importlib
import json
import logging
from pathlib import Path
import statistics
import sys
import time
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
    home_assistant,
    ms,
    percentile,
    preferred_pipeline,
    scripted_reply,
)

from homeassistant.components import stt, tts
from homeassistant.components.assist_pipeline import (
    AudioSettings,
    Pipeline,
    PipelineEvent,
    PipelineEventType,
    async_pipeline_from_audio_stream,
)
from homeassistant.components.assist_pipeline.models import PipelineStage
from homeassistant.const import CONF_LLM_HASS_API
from homeassistant.core import Context, HomeAssistant

from custom_components.xiaozhi.const import DOMAIN, WEBSOCKET_PATH
from custom_components.xiaozhi.protocol.codec import (
    OpusEncoder,
    WavStreamDecoder,
    parse_wav,
)
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.voice.endpointing import SpeechModel
from custom_components.xiaozhi.voice.listening import SessionEndpointing
from custom_components.xiaozhi.voice.session import VoiceSession
from fake_provider import FakeProvider
from simulator.device import DEFAULT_CLIENT_ID, SimulatedDevice
from simulator.mqtt_device import MqttSimulatedDevice
from tests.helpers.devices import MAC, TOKEN, wait_until

# 120 ms frames keep a run's audio far below the server's per-socket message rate.
FRAME_MS = 120
# The end-to-end runs stream like the firmware: 60 ms frames at real time.
LIVE_FRAME_MS = 60
LIVE_LEAD_S = 0.8
LIVE_TAIL_S = 3.0
NOISE_DBFS = -55.0
GREETING_WAV = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/voice/zh_nihao_gcin5.wav"
)
PAUSE_S = 0.3
TIMEOUT_S = 30.0
KITCHEN_SPEAKER = PairedDevice(MAC, TOKEN, "Kitchen speaker")


def utterance_pcm() -> bytes:
    """The utterance with silence around it, so that HA's VAD ends it."""
    wav = parse_wav(UTTERANCE.read_bytes())
    silence = bytes(wav.rate * 2)
    return silence + wav.pcm + silence + silence[: wav.rate]


if TYPE_CHECKING:
    _Device = SimulatedDevice
else:
    _Device = object


class _FirstAudio(_Device):
    """Notes when the first audio of a reply reaches a device, on either transport."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_audio_at: float | None = None
        self.first_audio = asyncio.Event()

    def expect_reply(self) -> None:
        self.first_audio_at = None
        self.first_audio.clear()
        self.pending_messages()

    def _note_audio(self) -> None:
        if self.speaking and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self.first_audio.set()


class TimedDevice(_FirstAudio, SimulatedDevice):
    """A simulated device noting when the first audio frame of a reply arrives."""

    async def _on_binary(self, data: bytes) -> None:
        self._note_audio()
        await super()._on_binary(data)


class TimedMqttDevice(_FirstAudio, MqttSimulatedDevice):
    """The same over MQTT+UDP: the first reply datagram is noted."""

    def datagram_received(self, data: bytes) -> None:
        self._note_audio()
        super().datagram_received(data)


def speech_end_label() -> float:
    """The utterance's true end of speech (s into the file), from the manifest."""
    manifest = json.loads((Path(__file__).parent / "recordings.json").read_text())
    [item] = [i for i in manifest["items"] if i["name"] == "zh_espeak_control"]
    end: float = item["label"]["end"]
    return end


def live_pcm(*, pause: bool = False) -> tuple[bytes, float]:
    """Lead noise, the utterance, tail noise; and where its speech ends (s).

    ``pause``: 你好 (a real speaker, tests/fixtures/voice), 300 ms, the utterance.
    """
    import numpy as np

    speech = np.frombuffer(parse_wav(UTTERANCE.read_bytes()).pcm, "<i2")
    rate = 16000
    before = 0.0
    if pause:
        greeting = np.frombuffer(parse_wav(GREETING_WAV.read_bytes()).pcm, "<i2")
        gap = np.zeros(int(PAUSE_S * rate), "<i2")
        speech = np.concatenate([greeting, gap, speech])
        before = (len(greeting) + len(gap)) / rate
    lead, tail = int(LIVE_LEAD_S * rate), int(LIVE_TAIL_S * rate)
    rng = np.random.default_rng(16)
    noise = rng.normal(0, 32768 * 10 ** (NOISE_DBFS / 20), lead + len(speech) + tail)
    mixed = noise
    mixed[lead : lead + len(speech)] += speech
    pcm = np.clip(mixed, -32768, 32767).astype("<i2").tobytes()
    return pcm, LIVE_LEAD_S + before + speech_end_label()


@dataclass
class Results:
    mqtt: list[float] = field(default_factory=list)
    hello_websocket: list[float] = field(default_factory=list)
    hello_mqtt: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    stock: list[float] = field(default_factory=list)
    live_tools: list[float] = field(default_factory=list)
    live_chat: list[float] = field(default_factory=list)
    live_stock: list[float] = field(default_factory=list)
    live_ha_vad: list[float] = field(default_factory=list)
    live_pause: list[float] = field(default_factory=list)
    pause_cuts: int = 0
    # (configuration, turns, STT requests, chat requests)
    requests: list[tuple[str, int, int, int]] = field(default_factory=list)
    # End of speech in the audio -> the end of the answering run's audio.
    live_decision: list[float] = field(default_factory=list)
    speculations: tuple[int, int] = (0, 0)
    bridge: list[float] = field(default_factory=list)
    bridge_tts: list[float] = field(default_factory=list)
    bridge_rest: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- ours


async def run_ours(
    device: TimedDevice | TimedMqttDevice,
    provider: FakeProvider,
    results: Results,
    runtime: Any,
    figures: list[float] | None = None,
) -> None:
    """One turn through the device's voice session; stop at the first frame."""
    provider.add_transcript(TRANSCRIPT)
    provider.add_reply(scripted_reply())
    device.expect_reply()
    await device.listen_start("auto")
    await device.send_pcm(utterance_pcm())
    async with asyncio.timeout(TIMEOUT_S):
        await device.first_audio.wait()
    handler = runtime.session.handler
    assert isinstance(handler, VoiceSession)
    turn = handler.last_turn
    assert turn is not None
    assert turn.speech_ended_at is not None
    assert turn.speech.started_at is not None
    assert turn.speech.first_audio_at is not None
    assert device.first_audio_at is not None
    if figures is not None:  # MQTT: only the end-to-end figure
        figures.append(device.first_audio_at - turn.speech_ended_at)
        await device.abort()
        async with asyncio.timeout(TIMEOUT_S):
            while (await device.next_message("tts"))["state"] != "stop":
                pass
        return
    results.ours.append(device.first_audio_at - turn.speech_ended_at)
    results.bridge.append(device.first_audio_at - turn.speech.started_at)
    results.bridge_tts.append(turn.speech.first_audio_at - turn.speech.started_at)
    results.bridge_rest.append(device.first_audio_at - turn.speech.first_audio_at)
    await device.abort()
    async with asyncio.timeout(TIMEOUT_S):
        while (await device.next_message("tts"))["state"] != "stop":
            pass


async def run_ours_live(
    device: TimedDevice,
    provider: FakeProvider,
    into: list[float],
    handler: VoiceSession,
    decisions: list[float] | None,
    *,
    pause: bool = False,
) -> bool:
    """One auto-mode turn streamed at real time; clock from the end of speech.

    The provider answers every request with its defaults (a guess taken back
    makes more than one). Returns whether the answer was to the whole
    utterance: a cut (an answer to part of it) shows as an upload without all
    the speech.
    """
    device.expect_reply()
    pcm, speech_end = live_pcm(pause=pause)
    encoder = OpusEncoder(16000, LIVE_FRAME_MS)
    packets = encoder.encode(pcm) + encoder.flush()
    await device.listen_start("auto")
    start = time.monotonic()

    async def stream() -> None:
        for index, packet in enumerate(packets):
            # A frame leaves the microphone once all of it was recorded.
            delay = start + (index + 1) * LIVE_FRAME_MS / 1000 - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
            if device.speaking:
                return  # the firmware stops sending while it plays
            await device.send_opus(packet, timestamp=index * LIVE_FRAME_MS)

    sender = asyncio.create_task(stream())
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await device.first_audio.wait()
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    assert device.first_audio_at is not None
    into.append(device.first_audio_at - (start + speech_end))
    whole = len(provider.transcriptions[-1].pcm) >= int(speech_end * 16000) * 2
    turn = handler.last_turn
    if decisions is not None and turn is not None and turn.speech_ended_at:
        decisions.append(turn.speech_ended_at - (start + speech_end))
    await device.abort()
    async with asyncio.timeout(TIMEOUT_S):
        while (await device.next_message("tts"))["state"] != "stop":
            pass
    return whole


async def set_agent_tools(
    hass: HomeAssistant, provider_url: str, tools: list[str] | None
) -> list[str] | None:
    """Give the pipeline's agent these tool APIs (None: chat only); return the old."""
    [entry] = [
        e
        for e in hass.config_entries.async_entries(DOMAIN)
        if e.unique_id == provider_url
    ]
    [subentry] = [
        s for s in entry.subentries.values() if s.subentry_type == "conversation"
    ]
    data = dict(subentry.data)
    previous: list[str] | None = data.pop(CONF_LLM_HASS_API, None)
    if tools is not None:
        data[CONF_LLM_HASS_API] = tools
    hass.config_entries.async_update_subentry(entry, subentry, data=data)
    await hass.async_block_till_done()
    return previous


# ---------------------------------------------------------------- stock


async def pcm_chunks(
    pcm: bytes, size: int = 1920, *, paced_from: float | None = None
) -> AsyncGenerator[bytes]:
    for start in range(0, len(pcm), size):
        if paced_from is not None:  # at real time, each chunk once recorded
            due = paced_from + (start + size) / 32000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        yield pcm[start : start + size]


async def run_stock(
    hass: HomeAssistant,
    pipeline: Pipeline,
    provider: FakeProvider,
    results: Results,
    *,
    live: bool = False,
) -> None:
    """One run of HA's own pipeline to its TTS stage; stop at the first PCM.

    ``live``: the audio comes at real time and the clock starts at the end of
    speech in it (else: all at once, clock from HA's ``stt-vad-end``).
    """
    provider.add_transcript(TRANSCRIPT)
    provider.add_reply(scripted_reply())
    speech_ended: list[float] = []
    first_pcm: asyncio.Future[float] = hass.loop.create_future()
    started = time.monotonic()
    if live:
        pcm, speech_end = live_pcm()
        stream = pcm_chunks(pcm, paced_from=started)
    else:
        stream = pcm_chunks(utterance_pcm())
    readers: list[asyncio.Task[None]] = []

    async def read_first_pcm(token: str) -> None:
        stream = tts.async_get_stream(hass, token)
        assert stream is not None
        decoder = WavStreamDecoder()
        async for chunk in stream.async_stream_result():
            if decoder.feed(chunk) and not first_pcm.done():
                first_pcm.set_result(time.monotonic())
                return

    def on_event(event: PipelineEvent) -> None:
        data = event.data or {}
        if event.type is PipelineEventType.STT_VAD_END:
            speech_ended.append(time.monotonic())
        elif event.type is PipelineEventType.RUN_START and "tts_output" in data:
            readers.append(
                hass.async_create_task(read_first_pcm(data["tts_output"]["token"]))
            )
        elif event.type is PipelineEventType.ERROR and not first_pcm.done():
            first_pcm.set_exception(RuntimeError(f"pipeline error: {data}"))

    run = hass.async_create_task(
        async_pipeline_from_audio_stream(
            hass,
            context=Context(),
            event_callback=on_event,
            stt_metadata=stt.SpeechMetadata(
                language="",
                format=stt.AudioFormats.WAV,
                codec=stt.AudioCodecs.PCM,
                bit_rate=stt.AudioBitRates.BITRATE_16,
                sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
                channel=stt.AudioChannels.CHANNEL_MONO,
            ),
            stt_stream=stream,
            pipeline_id=pipeline.id,
            end_stage=PipelineStage.TTS,
            audio_settings=AudioSettings(),
        )
    )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            first = await first_pcm
    finally:
        for task in (run, *readers):
            task.cancel()
        await asyncio.gather(run, *readers, return_exceptions=True)
    if live:
        results.live_stock.append(first - (started + speech_end))
    else:
        results.stock.append(first - speech_ended[0])


# ---------------------------------------------------------------- report


def endpoint(provider: FakeProvider) -> ProviderEndpoint:
    return ProviderEndpoint(provider.base_url, provider.api_key, provider.models)


def report(results: Results, plot: Path | None) -> None:
    ours = statistics.median(results.ours)
    stock = statistics.median(results.stock)
    print(
        f"Reply: {len(REPLY)} characters of Chinese; provider: TTFT "
        f"{TTFT_S * 1000:.0f} ms, {TOKENS_PER_S:.0f} tokens/s (1 character each), "
        f"TTS {TTS_FIRST_BYTE_S * 1000:.0f} ms to first byte."
    )
    print("End of speech (HA VAD) -> first audio, median:")
    print(f"  ours  {ms(ours)}  first Opus frame at the device (n={len(results.ours)})")
    print(
        f"  stock {ms(stock)}  first PCM from the pipeline's TTS stream "
        f"(n={len(results.stock)})"
    )
    print(
        f"Bridge, first clause received -> first Opus frame (n={len(results.bridge)}):"
    )
    for name, values in (
        ("total", results.bridge),
        ("TTS engine (clause -> first PCM)", results.bridge_tts),
        ("ours (first PCM -> first frame)", results.bridge_rest),
    ):
        print(
            f"  {name:<34} p50 {ms(percentile(values, 0.5))}"
            f"  p95 {ms(percentile(values, 0.95))}"
        )
    mqtt = statistics.median(results.mqtt)
    print("Over MQTT+UDP beside WebSocket, median:")
    print(
        f"  wake (hello) -> listening   websocket {ms(statistics.median(results.hello_websocket))}"
        f" (connect + hello)  mqtt+udp {ms(statistics.median(results.hello_mqtt))}"
        f" (hello on the open link)  n={len(results.hello_mqtt)}"
    )
    print(
        f"  end of speech -> first audio  websocket {ms(ours)}  mqtt+udp {ms(mqtt)}"
        f"  n={len(results.mqtt)}"
    )
    if plot is not None:
        write_plot(results, plot)
    if results.live_stock:
        live_stock = statistics.median(results.live_stock)
        print(
            "Auto mode, end of speech in the audio -> first audio, median "
            f"(streamed at real time; speculations {results.speculations[0]}, "
            f"cancelled {results.speculations[1]}):"
        )
        for name, values in (
            ("ours, agent with tools", results.live_tools),
            ("ours, chat-only agent", results.live_chat),
            ("ours, 你好 + 300 ms pause + it", results.live_pause),
            ("ours with HA's VAD (before)", results.live_ha_vad),
            ("stock, HA's VAD", results.live_stock),
        ):
            print(
                f"  {name:<32} {ms(statistics.median(values))}  p95 "
                f"{ms(percentile(values, 0.95))} (n={len(values)})"
            )
        decision = results.live_decision
        requests = ", ".join(
            f"{name}: {stt}/{chat} in {turns} turns"
            for name, turns, stt, chat in results.requests
        )
        print(f"  provider requests (STT/chat): {requests}; cuts {results.pause_cuts}")
        print(
            f"  of which end of speech -> our (guessed) end: p50 "
            f"{ms(percentile(decision, 0.5))}  p95 {ms(percentile(decision, 0.95))}"
        )
        ours_live = statistics.median(results.live_tools)
        print(
            "end of speech -> first audio (auto, median): ours "
            f"{ours_live * 1000:.0f} ms (tools), "
            f"{statistics.median(results.live_chat) * 1000:.0f} ms (chat only), "
            f"ours with HA's VAD {statistics.median(results.live_ha_vad) * 1000:.0f} ms,"
            f" stock {live_stock * 1000:.0f} ms; ratio ours/stock "
            f"{ours_live / live_stock:.2f}"
        )
    print(f"first audio ratio ours/stock: {ours / stock:.2f}")
    print(f"first audio ratio mqtt/websocket: {mqtt / ours:.2f}")


def write_plot(results: Results, path: Path) -> None:
    try:
        # Optional, and untyped for mypy: loaded by name.
        mpl = importlib.import_module("matplotlib")
        mpl.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        print("--plot needs matplotlib (pip install matplotlib): no plot written")
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.boxplot([results.ours, results.stock], tick_labels=["ours", "stock"])
    left.set_ylabel("end of speech -> first audio (s)")
    right.hist([v * 1000 for v in results.bridge], bins=30)
    right.set_xlabel("first clause -> first Opus frame (ms)")
    figure.tight_layout()
    figure.savefig(path)
    print(f"plot written to {path}")


def no_model() -> SpeechModel:
    raise OSError("HA's VAD for comparison")


async def run_live(
    hass: HomeAssistant,
    http: aiohttp.ClientSession,
    port: int,
    provider: FakeProvider,
    results: Results,
    runs: int,
) -> None:
    """Our auto-mode turns at real time: the agent with its tools, then without."""
    provider.default_transcript = TRANSCRIPT
    provider.default_reply = scripted_reply()
    tools = await set_agent_tools(hass, provider.base_url, None)
    for name, agent_tools, into, ours, pause in (
        ("tools", tools, results.live_tools, True, False),
        ("chat only", None, results.live_chat, True, False),
        ("tools, 300 ms pause", tools, results.live_pause, True, True),
        ("HA's VAD", tools, results.live_ha_vad, False, False),
    ):
        await set_agent_tools(hass, provider.base_url, agent_tools)
        device = TimedDevice(
            http,
            f"http://127.0.0.1:{port}{WEBSOCKET_PATH}",
            token=TOKEN,
            features={},
            frame_duration_ms=LIVE_FRAME_MS,
        )
        await device.open()
        [entry] = [
            entry
            for entry in hass.config_entries.async_entries(DOMAIN)
            if entry.unique_id == MAC
        ]
        session = entry.runtime_data.session
        assert session is not None
        handler = session.handler
        assert isinstance(handler, VoiceSession)
        if not ours:  # without its model the session falls back to HA's VAD
            handler.endpointing = SessionEndpointing(load=no_model)
        stt_before, chat_before = (
            len(provider.transcriptions),
            len(provider.chat_requests),
        )
        for _ in range(runs):
            decisions = results.live_decision if ours and not pause else None
            whole = await run_ours_live(
                device, provider, into, handler, decisions, pause=pause
            )
            results.pause_cuts += not whole
        results.requests.append(
            (
                name,
                runs,
                len(provider.transcriptions) - stt_before,
                len(provider.chat_requests) - chat_before,
            )
        )
        count = handler.endpointing.count
        results.speculations = (
            results.speculations[0] + count.started,
            results.speculations[1] + count.taken_back,
        )
        await device.close()
    await set_agent_tools(hass, provider.base_url, tools)


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    """Measure both ways and print the comparison."""
    results = Results()
    port = free_port()
    async with (
        FakeProvider() as provider,
        home_assistant(endpoint(provider), port, [KITCHEN_SPEAKER]) as hass,
    ):
        provider.speech.first_byte_delay = TTS_FIRST_BYTE_S
        pipeline = await preferred_pipeline(hass)
        async with aiohttp.ClientSession() as http:
            device = TimedDevice(
                http,
                f"http://127.0.0.1:{port}{WEBSOCKET_PATH}",
                token=TOKEN,
                features={},
                frame_duration_ms=FRAME_MS,
            )
            await device.open()
            [entry] = [
                entry
                for entry in hass.config_entries.async_entries(DOMAIN)
                if entry.unique_id == MAC
            ]
            for _ in range(args.bridge_runs):
                await run_ours(device, provider, results, entry.runtime_data)
            await device.close()
            # One device reconnects back to back below, far faster than anyone
            # wakes a device: lift its connection budget (issue 17's limit).
            server = async_get_server(hass)
            server.limits = replace(
                server.limits, connections_per_second=1e9, connection_burst=10**9
            )
            await measure_mqtt(
                http, port, device_args(), provider, results, entry, args
            )
            if args.live_runs:
                await run_live(hass, http, port, provider, results, args.live_runs)
        for _ in range(args.runs):
            await run_stock(hass, pipeline, provider, results)
        for _ in range(args.live_runs):
            await run_stock(hass, pipeline, provider, results, live=True)
    report(results, args.plot)


def device_args() -> dict[str, Any]:
    return {"features": {}, "frame_duration_ms": FRAME_MS}


async def measure_mqtt(
    http: aiohttp.ClientSession,
    port: int,
    options: dict[str, Any],
    provider: FakeProvider,
    results: Results,
    entry: Any,
    args: argparse.Namespace,
) -> None:
    """Wake-to-listening both ways, then the turns over MQTT+UDP."""
    url = f"http://127.0.0.1:{port}{WEBSOCKET_PATH}"
    for _ in range(args.hello_runs):
        device = TimedDevice(http, url, token=TOKEN, **options)
        started = time.monotonic()
        await device.open()
        results.hello_websocket.append(time.monotonic() - started)
        await device.close()
    async with http.post(
        f"http://127.0.0.1:{port}/xiaozhi/ota/",
        headers={"Device-Id": MAC, "Client-Id": DEFAULT_CLIENT_ID},
        json={},
    ) as response:
        section = (await response.json())["mqtt"]
    mqtt = TimedMqttDevice(section, **options)
    await mqtt.connect()
    runtime = entry.runtime_data
    for _ in range(args.hello_runs):
        started = time.monotonic()
        await mqtt.hello()
        results.hello_mqtt.append(time.monotonic() - started)
        await mqtt.goodbye()
        await wait_until(runtime, lambda: runtime.session is None, TIMEOUT_S)
    await mqtt.hello()
    for _ in range(args.mqtt_runs):
        await run_ours(mqtt, provider, results, runtime, results.mqtt)
    await mqtt.close()


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=int, default=10, help="runs of the stock pipeline (default 10)"
    )
    parser.add_argument(
        "--bridge-runs",
        type=int,
        default=100,
        help="runs of our voice session (default 100)",
    )
    parser.add_argument(
        "--mqtt-runs",
        type=int,
        default=20,
        help="runs of our voice session over MQTT+UDP (default 20)",
    )
    parser.add_argument(
        "--hello-runs",
        type=int,
        default=20,
        help="wake-to-listening runs on each transport (default 20)",
    )
    parser.add_argument(
        "--live-runs",
        type=int,
        default=6,
        help="auto-mode runs streamed at real time, per configuration (default 6)",
    )
    parser.add_argument("--plot", type=Path, help="write a PNG of the results")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
