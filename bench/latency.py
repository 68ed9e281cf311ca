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
from dataclasses import dataclass, field
import importlib
import logging
from pathlib import Path
import statistics
import sys
import time
from typing import Any

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
from homeassistant.core import Context, HomeAssistant

from custom_components.xiaozhi.const import DOMAIN, WEBSOCKET_PATH
from custom_components.xiaozhi.protocol.codec import WavStreamDecoder, parse_wav
from custom_components.xiaozhi.voice.session import VoiceSession
from fake_provider import FakeProvider
from simulator.device import DEFAULT_CLIENT_ID, SimulatedDevice
from simulator.mqtt_device import MqttSimulatedDevice
from tests.helpers.devices import MAC, TOKEN, wait_until

# 120 ms frames keep a run's audio far below the server's per-socket message rate.
FRAME_MS = 120
TIMEOUT_S = 30.0
KITCHEN_SPEAKER = PairedDevice(MAC, TOKEN, "Kitchen speaker")


def utterance_pcm() -> bytes:
    """The utterance with silence around it, so that HA's VAD ends it."""
    wav = parse_wav(UTTERANCE.read_bytes())
    silence = bytes(wav.rate * 2)
    return silence + wav.pcm + silence + silence[: wav.rate]


class TimedDevice(SimulatedDevice):
    """A simulated device noting when the first audio frame of a reply arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_audio_at: float | None = None
        self.first_audio = asyncio.Event()

    def expect_reply(self) -> None:
        self.first_audio_at = None
        self.first_audio.clear()
        self.pending_messages()

    async def _on_binary(self, data: bytes) -> None:
        if self.speaking and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self.first_audio.set()
        await super()._on_binary(data)


class TimedMqttDevice(MqttSimulatedDevice):
    """The same over MQTT+UDP: the first reply datagram is noted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_audio_at: float | None = None
        self.first_audio = asyncio.Event()

    def expect_reply(self) -> None:
        self.first_audio_at = None
        self.first_audio.clear()
        self.pending_messages()

    def datagram_received(self, data: bytes) -> None:
        if self.speaking and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self.first_audio.set()
        super().datagram_received(data)


@dataclass
class Results:
    mqtt: list[float] = field(default_factory=list)
    hello_websocket: list[float] = field(default_factory=list)
    hello_mqtt: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    stock: list[float] = field(default_factory=list)
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


# ---------------------------------------------------------------- stock


async def pcm_chunks(pcm: bytes, size: int = 1920) -> AsyncGenerator[bytes]:
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


async def run_stock(
    hass: HomeAssistant, pipeline: Pipeline, provider: FakeProvider, results: Results
) -> None:
    """One run of HA's own pipeline to its TTS stage; stop at the first PCM."""
    provider.add_transcript(TRANSCRIPT)
    provider.add_reply(scripted_reply())
    speech_ended: list[float] = []
    first_pcm: asyncio.Future[float] = hass.loop.create_future()
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
            stt_stream=pcm_chunks(utterance_pcm()),
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
            await measure_mqtt(
                http, port, device_args(), provider, results, entry, args
            )
        for _ in range(args.runs):
            await run_stock(hass, pipeline, provider, results)
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
    parser.add_argument("--plot", type=Path, help="write a PNG of the results")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
