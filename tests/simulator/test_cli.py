"""The command-line simulator (``python -m simulator``) against a real Home Assistant.

`simulator.cli.async_main` runs in-process against the integration in a test Home
Assistant, over real HTTP and WebSocket on a local port: it checks in, prints the
activation code, which the test types into the discovery flow as a person would,
gets its WebSocket settings, connects and says its utterance as real-time Opus;
the device's assist satellite answers through a real pipeline (our STT, agent and
TTS on the local fake provider). espeak-ng and the audio player are stand-in
programs on ``PATH`` (shell scripts recording what they were asked), so the tests
do not depend on what the machine has installed; one test uses the real espeak-ng
when present. Ordering is proven by what was printed and received, never by time.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
import io
import json
import logging
import os
from pathlib import Path
import re
import shutil
import socket
import stat
import subprocess
import sys
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
import numpy as np
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components.assist_pipeline import (
    Pipeline,
    async_create_default_pipeline,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.tts.const import DATA_TTS_MANAGER
from homeassistant.config_entries import (
    SOURCE_INTEGRATION_DISCOVERY,
    ConfigEntryDisabler,
)
from homeassistant.const import CONF_CODE, CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import (
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_DEVICE_LANGUAGE,
    CONF_FIRMWARE_VERSION,
    DOMAIN,
)
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.protocol.codec import (
    OpusEncoder,
    PcmResampler,
    parse_wav,
    pcm_to_wav,
)
from custom_components.xiaozhi.protocol.messages import ListenMode
from custom_components.xiaozhi.transport.base import EndReason
from fake_provider import ChatReply, FakeProvider
from simulator import audio, checkin, console as sim_console, state as sim_state
from simulator.board import SimBoard
from simulator.checkin import Activation, OtaClient, PairingTiming, obtain_websocket
from simulator.cli import Options, Simulation, async_main, parse_options
from simulator.conversation import Timing, TurnRecorder, speak, split_frames
from simulator.device import DEFAULT_CLIENT_ID, ChannelClosedError, SimulatedDevice
from simulator.errors import SimulatorError
from simulator.state import DeviceState, StateFileError, WebsocketSettings
from tests.helpers.devices import MAC, TOKEN, dominant_hz, tone

TIMEOUT = 40.0
STT_ENTITY = "stt.xiaozhi_stt"
TTS_ENTITY = "tts.xiaozhi_tts"
AGENT_ENTITY = "conversation.xiaozhi_conversation"
UTTERANCE = Path(__file__).parents[1] / "fixtures" / "zh_turn_on_the_light.wav"
TRANSCRIPT = "打开客厅灯"
ANSWER = ("好的，", "客厅灯已经打开了。")
RATE_OUT = 24000
FRAME_BYTES_OUT = RATE_OUT * 2 * 60 // 1000
TIMING_LINE = re.compile(
    r"^timing: end of speech → stt (-?\d+\.\d{3} s|n/a),"
    r" → first audio (-?\d+\.\d{3} s|n/a), → tts stop (-?\d+\.\d{3} s|n/a)$"
)
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


class Transcript(io.StringIO):
    """The simulator's output, which a test can wait on."""

    def __init__(self) -> None:
        super().__init__()
        self._written = asyncio.Event()

    def write(self, text: str) -> int:
        self._written.set()
        return super().write(text)

    async def wait_for(self, pattern: str) -> re.Match[str]:
        async with asyncio.timeout(TIMEOUT):
            while not (match := re.search(pattern, self.getvalue())):
                self._written.clear()
                await self._written.wait()
        return match

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


@dataclass
class Run:
    """One simulator run in the background."""

    task: asyncio.Task[int]
    out: Transcript
    err: io.StringIO

    async def result(self) -> int:
        async with asyncio.timeout(TIMEOUT):
            return await self.task


def start(*args: str) -> Run:
    out, err = Transcript(), io.StringIO()
    return Run(asyncio.create_task(async_main(list(args), out=out, err=err)), out, err)


async def run(*args: str) -> Run:
    sim = start(*args)
    await sim.result()
    return sim


def received(sim: Run) -> list[dict[str, Any]]:
    """The JSON messages the simulator printed as received."""
    return [
        json.loads(line.split("← ", 1)[1])
        for line in sim.out.lines()
        if "] ← {" in line
    ]


def sent(sim: Run) -> list[dict[str, Any]]:
    """The JSON messages the simulator printed as sent."""
    return [
        json.loads(line.split("→ ", 1)[1])
        for line in sim.out.lines()
        if "] → {" in line
    ]


def timing(sim: Run) -> tuple[float | None, float | None, float | None]:
    """The seconds of the final timing line (None for n/a)."""
    match = TIMING_LINE.match(sim.out.lines()[-1])
    assert match, sim.out.getvalue()
    stt, first_audio, tts_stop = (
        None if value == "n/a" else float(value.removesuffix(" s"))
        for value in match.groups()
    )
    return stt, first_audio, tts_stop


def complete_timing(sim: Run) -> tuple[float, float, float]:
    stt, first_audio, tts_stop = timing(sim)
    assert stt is not None
    assert first_audio is not None
    assert tts_stop is not None
    return stt, first_audio, tts_stop


def envelope(pcm: bytes, rate: int = 16000) -> np.ndarray:
    """RMS per 20 ms."""
    samples = np.frombuffer(pcm, "<i2").astype(float)
    size = rate // 50
    count = len(samples) // size
    return np.asarray(
        np.sqrt(np.mean(samples[: count * size].reshape(count, size) ** 2, axis=1))
    )


def same_speech(a: bytes, b: bytes) -> float:
    """Best correlation of the two envelopes over shifts up to 1 s either way."""
    x, y = envelope(a), envelope(b)
    best = -1.0
    for shift in range(-50, 51):
        left, right = (x[shift:], y) if shift >= 0 else (x, y[-shift:])
        size = min(len(left), len(right))
        if size > 50:
            best = max(best, float(np.corrcoef(left[:size], right[:size])[0, 1]))
    return best


def utterance_pcm() -> bytes:
    wav = parse_wav(UTTERANCE.read_bytes())
    assert (wav.rate, wav.channels, wav.width) == (16000, 1, 2)
    return wav.pcm


def write_stereo_48k(path: Path, pcm_16k: bytes) -> None:
    """The speech as a 48 kHz stereo recording (right channel at half level)."""
    resampler = PcmResampler(16000, 48000)
    left = np.frombuffer(resampler.resample(pcm_16k) + resampler.flush(), "<i2")
    stereo = np.stack([left, left // 2], axis=1).astype("<i2").tobytes()
    path.write_bytes(pcm_to_wav(stereo, 48000, channels=2))


def discovery_flows(hass: HomeAssistant) -> list[Any]:
    return [
        flow
        for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"]["source"] == SOURCE_INTEGRATION_DISCOVERY
    ]


async def enter_code(hass: HomeAssistant, code: str) -> None:
    """Type the code into the discovered device's flow, as a person would."""
    await hass.async_block_till_done()
    (flow,) = discovery_flows(hass)
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_CODE: code}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def install_program(directory: Path, name: str, script: str) -> Path:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@dataclass
class FakePrograms:
    """espeak-ng and paplay stand-ins on PATH that record how they were used."""

    espeak_log: Path
    played: Path

    def espeak_calls(self) -> list[str]:
        if not self.espeak_log.exists():
            return []
        return self.espeak_log.read_text().splitlines()

    def played_wavs(self) -> list[bytes]:
        return [path.read_bytes() for path in sorted(self.played.glob("*.wav"))]


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def ha_url(
    ha_core: HomeAssistant, hass_client_no_auth: Callable[[], Awaitable[Any]]
) -> str:
    """The test Home Assistant's URL, with the integration set up."""
    assert await async_setup_component(ha_core, DOMAIN, {})
    client = await hass_client_no_auth()
    return str(client.make_url("/")).rstrip("/")


@pytest.fixture
async def pipeline(ha_core: HomeAssistant, provider_entry: MockConfigEntry) -> Pipeline:
    """The preferred pipeline: our STT, agent and TTS on the fake provider."""
    ha_core.data[DATA_TTS_MANAGER].use_file_cache = False
    created = await async_create_default_pipeline(
        ha_core, STT_ENTITY, TTS_ENTITY, "Xiaozhi"
    )
    assert created is not None
    await async_update_pipeline(ha_core, created, conversation_engine=AGENT_ENTITY)
    ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store.async_set_preferred_item(
        created.id
    )
    return created


@pytest.fixture
def programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePrograms:
    """Stand-ins for espeak-ng (it "says" the fixture) and paplay, first on PATH."""
    directory = tmp_path / "bin"
    directory.mkdir()
    fakes = FakePrograms(espeak_log=tmp_path / "espeak.log", played=tmp_path / "played")
    fakes.played.mkdir()
    install_program(
        directory,
        "espeak-ng",
        f'printf "%s\\n" "$*" >> "{fakes.espeak_log}"\ncat "{UTTERANCE}"',
    )
    install_program(directory, "paplay", f'cat > "{fakes.played}/$(date +%s%N).wav"')
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return fakes


@pytest.fixture
def short_wav(tmp_path: Path) -> Path:
    """A 0.3 s tone: a quick utterance for runs that expect no real answer."""
    path = tmp_path / "tone.wav"
    path.write_bytes(pcm_to_wav(tone(440, 16000, 0.3), 16000))
    return path


@pytest.fixture
async def paired_state(
    ha_url: str, device_entry: MockConfigEntry, tmp_path: Path
) -> Path:
    """A state file of the paired device of ``device_entry`` (not yet connected)."""
    path = tmp_path / "state.json"
    await sim_state.save_state(
        path,
        DeviceState(
            mac=MAC, client_id=DEFAULT_CLIENT_ID, ota_url=checkin.ota_url(ha_url)
        ),
    )
    return path


# ---------------------------------------------------------------- whole runs


async def test_first_run_pairs_with_the_spoken_code_then_talks(
    ha_core: HomeAssistant,
    ha_url: str,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    programs: FakePrograms,
    tmp_path: Path,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text("".join(ANSWER), chunk=3))
    recording = tmp_path / "speech-48k-stereo.wav"
    write_stereo_48k(recording, utterance_pcm())
    state_file, reply = tmp_path / "sim" / "state.json", tmp_path / "reply.wav"

    sim = start(
        *("--ha", ha_url, "--wav", str(recording), "--state-file", str(state_file)),
        *("--out", str(reply), "--poll-interval", "0.05", "--play"),
    )
    code = (await sim.out.wait_for(r"activation code: (\d{6})"))[1]
    # Until the code is entered the device waits, with its identity already kept.
    saved = json.loads(state_file.read_text())
    assert saved["websocket"] is None
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    await enter_code(ha_core, code)

    assert await sim.result() == 0, sim.err.getvalue()
    assert sim.err.getvalue() == ""
    output = sim.out.getvalue()
    assert "█" in output  # the code drawn big
    assert f"→ POST {ha_url}/xiaozhi/ota/ (OTA check-in)" in output

    # Paired as the firmware would be: its identity and the websocket it was given.
    entry = ha_core.config_entries.async_entry_for_domain_unique_id(
        DOMAIN, saved["mac"]
    )
    assert entry is not None
    assert entry.data[CONF_CLIENT_ID] == saved["client_id"]
    assert entry.data[CONF_BOARD] == "xiaozhi-simulator"
    assert entry.data[CONF_FIRMWARE_VERSION] == "1.9.2"
    assert entry.data[CONF_DEVICE_LANGUAGE] == "zh-CN"
    saved = json.loads(state_file.read_text())
    port = ha_url.rsplit(":", 1)[1]
    assert saved["websocket"] == {
        "url": f"ws://127.0.0.1:{port}/xiaozhi/v1/",
        "token": entry.data[CONF_TOKEN],
        "version": 1,
    }
    assert saved["ota_url"] == f"{ha_url}/xiaozhi/ota/"

    # The exchange, printed as it happened.
    messages = received(sim)
    hello = messages[0]
    assert (hello["type"], hello["transport"]) == ("hello", "websocket")
    session = {"session_id": hello["session_id"]}
    outgoing = sent(sim)
    assert outgoing[0]["type"] == "hello"
    assert outgoing[0]["audio_params"]["sample_rate"] == 16000
    assert {**session, "type": "listen", "state": "start", "mode": "auto"} in outgoing
    assert {**session, "type": "stt", "text": TRANSCRIPT} in messages
    tts = [m["state"] for m in messages if m["type"] == "tts"]
    assert tts[0] == "start"
    assert tts[-1] == "stop"
    assert [m["text"] for m in messages if m.get("state") == "sentence_start"] == list(
        ANSWER
    )
    # The board's MCP tools were discovered.
    runtime = entry.runtime_data
    assert isinstance(runtime, DeviceRuntime)
    assert [tool.name for tool in runtime.tools] == [
        "self.get_device_status",
        "self.audio_speaker.set_volume",
    ]
    assert f"heard: {TRANSCRIPT}" in output
    assert f"answer: {' '.join(ANSWER)}" in output
    stt, first_audio, tts_stop = complete_timing(sim)
    assert stt <= first_audio <= tts_stop

    # HA heard the recording (48 kHz stereo → 16 kHz mono → Opus → HA's VAD).
    [upload] = fake_provider.transcriptions
    assert upload.wav.sample_rate == 16000
    assert same_speech(upload.pcm, utterance_pcm()) > 0.9
    # The answer, decoded from 24 kHz Opus, saved and played.
    wav = parse_wav(reply.read_bytes())
    assert (wav.rate, wav.channels, wav.width) == (RATE_OUT, 1, 2)
    spoken = sum(
        fake_provider.speech.pcm_bytes(r.input) for r in fake_provider.speech_requests
    )
    assert 0 <= len(wav.pcm) - spoken <= 3 * FRAME_BYTES_OUT
    assert dominant_hz(wav.pcm, RATE_OUT) == pytest.approx(400, abs=5)
    # The code was spoken (message, then the digits one by one), the answer played.
    [speak_code] = programs.espeak_calls()
    assert speak_code.startswith("-v cmn --stdout ")
    assert speak_code.endswith(" ".join(code))
    played = programs.played_wavs()
    assert parse_wav(played[-1]).pcm == wav.pcm
    assert len(played) == 2


async def test_a_paired_device_connects_at_once_and_later_without_checking_in(
    ha_core: HomeAssistant,
    paired_state: Path,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    programs: FakePrograms,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="custom_components.xiaozhi")
    fake_provider.add_transcript(TRANSCRIPT, TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.text("".join(ANSWER)), ChatReply.text("".join(ANSWER))
    )
    ha_url = ha_url_of(paired_state)
    common = ("--state-file", str(paired_state), "--no-save", "--say", TRANSCRIPT)

    # Push to talk, binary protocol 3, the utterance from espeak-ng.
    first = await run(
        "--ha",
        ha_url,
        "--manual",
        "--protocol-version",
        "3",
        "--lang",
        "zh-HK",
        *common,
    )
    assert await first.result() == 0, first.err.getvalue()
    assert "activation code" not in first.out.getvalue()
    assert programs.espeak_calls() == [f"-v yue --stdout {TRANSCRIPT}"]
    assert "connected (protocol version 3)" in caplog.text
    outgoing = sent(first)
    listen = [m for m in outgoing if m["type"] == "listen"]
    assert [(m["state"], m.get("mode")) for m in listen] == [
        ("start", "manual"),
        ("stop", None),
    ]
    complete_timing(first)
    saved = json.loads(paired_state.read_text())
    assert saved["websocket"]["token"] == TOKEN
    assert saved["mac"] == MAC

    # The saved settings suffice, as after a reboot without network for OTA.
    second = await run("--ha", ha_url, "--skip-ota", "--play", *common)
    assert await second.result() == 0, second.err.getvalue()
    assert "POST" not in second.out.getvalue()
    assert {"type": "stt", "text": TRANSCRIPT} in [
        {k: v for k, v in m.items() if k != "session_id"} for m in received(second)
    ]
    complete_timing(second)
    [played] = programs.played_wavs()
    assert parse_wav(played).rate == RATE_OUT
    assert len(fake_provider.transcriptions) == 2


async def test_the_simulator_talks_over_mqtt_and_udp(
    ha_core: HomeAssistant,
    ha_url: str,
    mqtt_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    programs: FakePrograms,
    tmp_path: Path,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text("".join(ANSWER)))
    state = tmp_path / "state.json"
    await sim_state.save_state(
        state,
        DeviceState(
            mac=MAC, client_id=DEFAULT_CLIENT_ID, ota_url=checkin.ota_url(ha_url)
        ),
    )
    common = ("--state-file", str(state), "--no-save", "--say", TRANSCRIPT)
    sim = await run("--ha", ha_url, "--transport", "mqtt", *common)
    assert await sim.result() == 0, sim.err.getvalue()
    out = sim.out.getvalue()
    assert "← mqtt 127.0.0.1:" in out
    assert "connected over MQTT" in out
    # MCP over the idle link, then the conversation's messages, then goodbye.
    messages = received(sim)
    assert any(m["type"] == "mcp" for m in messages)
    assert any(m["type"] == "hello" and m["transport"] == "udp" for m in messages)
    assert {"type": "stt", "text": TRANSCRIPT} in [
        {k: v for k, v in m.items() if k != "session_id"} for m in messages
    ]
    assert sent(sim)[-1]["type"] == "goodbye"
    complete_timing(sim)
    # --skip-ota cannot work: each check-in hands out a new password.
    skipped = await run("--ha", ha_url, "--transport", "mqtt", "--skip-ota", *common)
    assert await skipped.result() != 0
    assert "checks in every run" in skipped.err.getvalue()


# ---------------------------------------------------------------- failures


class ScriptedHandler:
    """A voice handler that acts at listen start or stop, as scripted."""

    def __init__(
        self,
        session: DeviceSession,
        action: Callable[[DeviceSession], Awaitable[None]] | None,
        trigger: str,
    ) -> None:
        self.session = session
        self.action = action
        self.trigger = trigger

    async def _act(self, trigger: str) -> None:
        if self.action is not None and trigger == self.trigger:
            await self.action(self.session)

    def on_connected(self) -> None:
        pass

    def on_disconnected(self) -> None:
        pass

    async def on_listen_start(self, mode: ListenMode) -> None:
        await self._act("start")

    async def on_listen_stop(self) -> None:
        await self._act("stop")

    async def on_wake_word(self, text: str) -> None:
        pass

    async def on_abort(self, reason: str | None) -> None:
        pass

    def on_audio(self, pcm: bytes) -> None:
        pass


def script_handler(
    entry: MockConfigEntry,
    action: Callable[[DeviceSession], Awaitable[None]] | None,
    trigger: str = "stop",
) -> None:
    """Serve the device's sessions with a scripted handler instead of the satellite."""
    runtime = entry.runtime_data
    assert isinstance(runtime, DeviceRuntime)
    runtime.async_set_handler_factory(
        lambda session: ScriptedHandler(session, action, trigger)
    )


def ha_url_of(state_file: Path) -> str:
    ota_url: str = json.loads(state_file.read_text())["ota_url"]
    return ota_url.removesuffix("/xiaozhi/ota/")


async def end_session(session: DeviceSession) -> None:
    session.end(EndReason.NORMAL, "the conversation is over")


async def send_alert(session: DeviceSession) -> None:
    await session.link.send_alert("错误", "出错了", "sad")


@pytest.mark.parametrize(
    ("action", "trigger", "error"),
    [
        (None, "stop", "error: no answer within 0.5 s (is an Assist pipeline selected"),
        (
            end_session,
            "start",
            (
                "error: Home Assistant closed the connection with code 1000"
                " (the conversation is over) before answering"
            ),
        ),
        (
            send_alert,
            "stop",
            "error: Home Assistant answered with an alert: 错误: 出错了",
        ),
    ],
    ids=["silence", "closed", "alert"],
)
async def test_a_missing_answer_is_an_error(
    device_entry: MockConfigEntry,
    paired_state: Path,
    short_wav: Path,
    action: Callable[[DeviceSession], Awaitable[None]] | None,
    trigger: str,
    error: str,
) -> None:
    script_handler(device_entry, action, trigger)

    sim = await run(
        *("--ha", ha_url_of(paired_state), "--state-file", str(paired_state)),
        *("--wav", str(short_wav), "--manual", "--reply-timeout", "0.5", "--no-save"),
    )

    assert await sim.result() == 1
    assert sim.err.getvalue().startswith(error), sim.err.getvalue()


async def test_audio_outside_an_answer_is_dropped_like_the_firmware(
    device_entry: MockConfigEntry,
    paired_state: Path,
    short_wav: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_program(tmp_path, "paplay", 'echo "device busy" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    async def answer(session: DeviceSession) -> None:
        await session.send_json({"type": "tts", "state": "stop"})
        await session._async_send_audio(bytes(20))  # stray audio
        await session.playback.play_pcm([tone(400, RATE_OUT, 0.3)], RATE_OUT)
        await session.playback.stop_speaking()

    script_handler(device_entry, answer)
    reply = tmp_path / "reply.wav"

    sim = await run(
        *("--ha", ha_url_of(paired_state), "--state-file", str(paired_state)),
        *("--wav", str(short_wav), "--manual", "--out", str(reply), "--play"),
    )

    assert await sim.result() == 0, sim.err.getvalue()
    output = sim.out.getvalue()
    assert (
        "(not playing the answer: paplay could not play the audio: device busy)"
        in output
    )
    assert output.count("← audio outside tts start/stop: dropped") == 1
    assert "heard:" not in output
    stt, first_audio, tts_stop = timing(sim)
    assert stt is None
    assert first_audio is not None
    assert tts_stop is not None
    assert 0 < first_audio <= tts_stop
    wav = parse_wav(reply.read_bytes())
    assert dominant_hz(wav.pcm, RATE_OUT) == pytest.approx(400, abs=5)


async def test_unreachable_home_assistant(
    socket_enabled: None, tmp_path: Path, short_wav: Path
) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    sim = await run(
        "--ha", url, "--wav", str(short_wav), "--state-file", str(tmp_path / "s.json")
    )
    assert await sim.result() == 1
    assert sim.err.getvalue().startswith(
        f"error: cannot reach Home Assistant at {url}/xiaozhi/ota/: "
    )


async def test_home_assistant_without_the_integration(
    ha_core: HomeAssistant,
    hass_client_no_auth: Callable[[], Awaitable[Any]],
    tmp_path: Path,
    short_wav: Path,
) -> None:
    assert await async_setup_component(ha_core, "http", {})
    client = await hass_client_no_auth()
    url = str(client.make_url("/")).rstrip("/")
    sim = await run(
        "--ha", url, "--wav", str(short_wav), "--state-file", str(tmp_path / "s.json")
    )
    assert await sim.result() == 1
    assert "answered with HTTP 404" in sim.err.getvalue()
    assert "is the Xiaozhi integration installed" in sim.err.getvalue()


@pytest.mark.parametrize(
    ("espeak", "note"),
    [
        (None, "(not speaking the code: espeak-ng is not installed"),
        (f"{shutil.which('sleep')} 60", None),  # speaking at the timeout: stopped
    ],
    ids=["no-espeak", "slow-espeak"],
)
async def test_nobody_enters_the_code(
    ha_core: HomeAssistant,
    ha_url: str,
    tmp_path: Path,
    short_wav: Path,
    monkeypatch: pytest.MonkeyPatch,
    espeak: str | None,
    note: str | None,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if espeak is not None:
        install_program(
            bin_dir, "espeak-ng", f"echo $$ > {tmp_path}/pid\nexec {espeak}"
        )
    monkeypatch.setenv("PATH", str(bin_dir))

    sim = await run(
        *("--ha", ha_url, "--wav", str(short_wav), "--poll-interval", "0.05"),
        *("--state-file", str(tmp_path / "s.json"), "--pair-timeout", "2"),
        "--play",
    )

    assert await sim.result() == 1
    assert "activation code: " in sim.out.getvalue()
    assert sim.err.getvalue() == (
        "error: the device was not paired within 2 s (enter the code in Home"
        " Assistant, or raise --pair-timeout)\n"
    )
    if note is not None:
        assert note in sim.out.getvalue()
    else:  # the speech was cut short with the run: no program left behind
        pid = int((tmp_path / "pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_disabled_device_is_refused(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    paired_state: Path,
    short_wav: Path,
) -> None:
    await ha_core.config_entries.async_set_disabled_by(
        device_entry.entry_id, ConfigEntryDisabler.USER
    )
    sim = await run(
        *("--ha", ha_url_of(paired_state), "--state-file", str(paired_state)),
        *("--wav", str(short_wav)),
    )
    assert await sim.result() == 1
    assert sim.err.getvalue() == (
        "error: Home Assistant closed the connection with code 4001"
        " (device is not enabled in Home Assistant)\n"
    )


async def test_a_refused_connection_names_code_and_reason(
    paired_state: Path, short_wav: Path
) -> None:
    saved = DeviceState.from_json(json.loads(paired_state.read_text()))
    ws_url = saved.ota_url.replace("http://", "ws://").replace("/ota/", "/v1/")
    await sim_state.save_state(
        paired_state,
        DeviceState(
            mac=saved.mac,
            client_id=saved.client_id,
            ota_url=saved.ota_url,
            websocket=WebsocketSettings(url=ws_url, token="stale-token"),
        ),
    )
    sim = await run(
        *("--ha", saved.ota_url.removesuffix("/xiaozhi/ota/"), "--skip-ota"),
        *("--state-file", str(paired_state), "--wav", str(short_wav)),
    )
    assert await sim.result() == 1
    assert sim.err.getvalue() == (
        "error: Home Assistant refused the device's token (HTTP 401: unknown"
        " device, or a token of an older pairing); run without --skip-ota to check"
        " in (and pair) again\n"
    )


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/nowhere", "error: the WebSocket handshake with {url} failed: HTTP 404"),
        (None, "error: cannot connect to {url}: "),
    ],
    ids=["not-found", "refused"],
)
async def test_a_websocket_that_is_not_there(
    socket_enabled: None,
    paired_state: Path,
    short_wav: Path,
    path: str | None,
    error: str,
) -> None:
    saved = DeviceState.from_json(json.loads(paired_state.read_text()))
    if path is None:
        url = f"ws://127.0.0.1:{unused_port()}/xiaozhi/v1/"
    else:
        url = saved.ota_url.replace("/xiaozhi/ota/", path)
    await sim_state.save_state(
        paired_state,
        DeviceState(
            mac=saved.mac,
            client_id=saved.client_id,
            ota_url=saved.ota_url,
            websocket=WebsocketSettings(url=url),
        ),
    )
    sim = await run(
        *("--ha", ha_url_of(paired_state), "--skip-ota"),
        *("--state-file", str(paired_state), "--wav", str(short_wav)),
    )
    assert await sim.result() == 1
    assert sim.err.getvalue().startswith(error.format(url=url)), sim.err.getvalue()


async def test_a_state_file_that_cannot_be_written(
    tmp_path: Path, short_wav: Path
) -> None:
    path = tmp_path / "state.json"
    (tmp_path / ".state.json.tmp").mkdir()  # where it would be written first
    sim = await run("--wav", str(short_wav), "--state-file", str(path))
    assert await sim.result() == 1
    assert sim.err.getvalue().startswith(f"error: cannot save {path}: ")


@pytest.mark.parametrize(
    ("setup", "args", "error"),
    [
        (None, ("--skip-ota",), "no saved connection for http://127.0.0.1:9 in "),
        ("garbage", (), "invalid state file: "),
        ('{"format": 1, "mac": "aa:bb:cc:dd:ee:ff"}', (), "bad client_id"),
        ('{"format": 7}', (), "not a state file of the Xiaozhi simulator"),
    ],
    ids=["skip-ota-unpaired", "not-json", "no-client-id", "other-format"],
)
async def test_state_file_problems(
    tmp_path: Path,
    short_wav: Path,
    setup: str | None,
    args: tuple[str, ...],
    error: str,
) -> None:
    path = tmp_path / "state.json"
    if setup is not None:
        path.write_text(setup)
    sim = await run(
        *("--ha", "http://127.0.0.1:9", "--wav", str(short_wav)),
        *("--state-file", str(path), *args),
    )
    assert await sim.result() == 1
    assert error in sim.err.getvalue()


async def test_unusable_input_audio(tmp_path: Path) -> None:
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("hello")
    sim = await run("--wav", str(not_wav), "--state-file", str(tmp_path / "s.json"))
    assert (
        sim.err.getvalue()
        == f"error: {not_wav}: cannot use this audio: not a WAV file\n"
    )
    missing = tmp_path / "missing.wav"
    sim = await run("--wav", str(missing), "--state-file", str(tmp_path / "s.json"))
    assert sim.err.getvalue().startswith(f"error: cannot read {missing}: ")
    assert not (tmp_path / "s.json").exists()


async def test_missing_espeak_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    sim = await run("--say", "你好", "--state-file", str(tmp_path / "s.json"))
    assert await sim.result() == 1
    assert "apt-get install espeak-ng" in sim.err.getvalue()
    assert "--wav FILE" in sim.err.getvalue()


async def test_failing_programs_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_program(tmp_path, "espeak-ng", 'echo "no voice" >&2; exit 1')
    install_program(tmp_path, "paplay", 'echo "no sound card" >&2; exit 1')
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SimulatorError, match=r"^espeak-ng failed: no voice$"):
        await audio.say("你好", "zh")
    with pytest.raises(
        SimulatorError, match=r"^paplay could not play the audio: no sound"
    ):
        await audio.play_wav(pcm_to_wav(tone(440, 16000, 0.1), 16000))
    (tmp_path / "paplay").unlink()
    with pytest.raises(SimulatorError, match="no audio player found"):
        await audio.play_wav(b"")
    with pytest.raises(SimulatorError, match=r"^cannot write "):
        await audio.write_wav(tmp_path / "missing" / "x.wav", b"", 16000)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
async def test_the_real_espeak_ng_speaks_mandarin() -> None:
    pcm = await audio.say(TRANSCRIPT, "zh-CN")
    assert len(pcm) > 16000 * 2 * 0.5
    assert audio.speech_frames(pcm, 1920) > 5


def test_invalid_arguments_exit_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for args in (
        ["--mac", "nope"],
        ["--ha", "localhost:8123"],
        ["--pair-timeout", "0"],
        ["--reply-timeout", "soon"],
        ["--wav", "a.wav", "--say", "hi"],
        ["--protocol-version", "4"],
    ):
        with pytest.raises(SystemExit) as exited:
            parse_options(args)
        assert exited.value.code == 2
    assert "not a MAC address: 'nope'" in capsys.readouterr().err


def test_defaults_and_normalisation() -> None:
    options = parse_options(["--mac", "AA-BB-CC-00-11-22", "--ha", "http://ha:8123/"])
    assert options == Options(
        ha_url="http://ha:8123",
        mac="aa:bb:cc:00:11:22",
        wav=None,
        say=None,
        language="zh-CN",
        protocol_version=None,
        manual=False,
        out=Path("reply.wav"),
        play=False,
        state_file=Path("~/.xiaozhi-sim.json").expanduser(),
        skip_ota=False,
        pair_timeout=600.0,
        reply_timeout=60.0,
        poll_interval=3.0,
    )
    assert options.utterance_text == "打开客厅灯"
    assert parse_options(["--lang", "en-US"]).utterance_text == (
        "Turn on the living room light"
    )
    assert parse_options(["--lang", "de"]).utterance_text == (
        "Turn on the living room light"
    )
    assert parse_options(["--no-save"]).out is None


def test_main_exits_1_on_errors_and_130_when_interrupted(
    socket_enabled: None, tmp_path: Path
) -> None:
    """``main`` as the command runs it, in a process of its own."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections, never answers
        port = silent.getsockname()[1]
        probe = (
            "import os, signal, sys, threading\n"
            "from simulator.cli import main\n"
            f"assert main(['--wav', {str(tmp_path / 'none.wav')!r}]) == 1\n"
            "threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
            "sys.exit(main(['--ha', 'http://127.0.0.1:%d' % int(sys.argv[1]),"
            f" '--wav', {str(UTTERANCE)!r},"
            f" '--state-file', {str(tmp_path / 's.json')!r}]))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe, str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 130, result.stderr
    assert result.stderr.startswith("error: cannot read ")
    assert result.stderr.endswith("interrupted\n")
    assert "→ POST http://127.0.0.1:" in result.stdout


def test_runs_as_a_module_without_home_assistant() -> None:
    """``python -m simulator`` works, and never imports Home Assistant or OpenAI."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['simulator', '--help']\n"
        "try:\n"
        "    runpy.run_module('simulator', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "assert 'homeassistant' not in sys.modules\n"
        "assert 'openai' not in sys.modules\n"
        # Of the integration, only its HA-free protocol packages.
        "loaded = {n.split('.')[2] for n in sys.modules\n"
        "          if n.startswith('custom_components.xiaozhi.')}\n"
        "assert loaded <= {'protocol', 'text'}, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--protocol-version {1,2,3}" in result.stdout
    assert result.stdout.endswith("ok\n")


async def test_a_device_just_paired_tries_again_while_it_is_set_up(
    socket_enabled: None, tmp_path: Path, short_wav: Path
) -> None:
    """Refused (4001) right after pairing: the entry may still be loading."""
    check_ins: list[int] = []
    connections: list[int] = []
    packet = OpusEncoder(RATE_OUT, 60).encode(tone(400, RATE_OUT, 0.06))[0]

    async def check_in(request: web.Request) -> web.Response:
        check_ins.append(1)
        if len(check_ins) == 1:
            return ota_json(activation={"code": "123456", "challenge": "c"})
        url = str(request.url.with_path("/xiaozhi/v1/").with_scheme("ws"))
        return ota_json(websocket={"url": url, "token": "t"})

    async def activate(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def channel(request: web.Request) -> web.WebSocketResponse:
        connections.append(1)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if len(connections) == 1:
            await ws.close(
                code=4001, message=b"device is not enabled in Home Assistant"
            )
            return ws
        await ws.receive()
        await ws.send_json(
            {"type": "hello", "transport": "websocket", "session_id": "x"}
        )
        async for message in ws:
            if message.type is WSMsgType.TEXT and '"stop"' in message.data:
                await ws.send_json({"type": "stt", "text": TRANSCRIPT})
                await ws.send_json({"type": "tts", "state": "start"})
                await ws.send_bytes(packet)
                await ws.send_json({"type": "tts", "state": "stop"})
        return ws

    app = web.Application()
    app.router.add_post("/xiaozhi/ota/", check_in)
    app.router.add_post("/xiaozhi/ota/activate", activate)
    app.router.add_get("/xiaozhi/v1/", channel)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        sim = await run(
            *("--ha", str(server.make_url("/")), "--wav", str(short_wav), "--manual"),
            *("--state-file", str(tmp_path / "s.json"), "--no-save"),
        )
    finally:
        await server.close()

    assert await sim.result() == 0, sim.err.getvalue()
    assert (
        "Home Assistant closed the connection with code 4001 (device is not enabled"
        " in Home Assistant); trying again in 1 s"
    ) in sim.out.getvalue()
    assert len(connections) == 2
    assert f"heard: {TRANSCRIPT}" in sim.out.getvalue()
    complete_timing(sim)


# ---------------------------------------------------------------- the OTA client


@dataclass
class ScriptedOta:
    """A fake OTA server answering from scripts; records the requests."""

    check_ins: list[web.Response]
    activations: list[int]
    requests: list[tuple[str, dict[str, str], Any]]


@pytest.fixture
async def ota_server(socket_enabled: None) -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def serve(script: ScriptedOta) -> str:
        async def check_in(request: web.Request) -> web.Response:
            script.requests.append(
                ("check-in", dict(request.headers), await request.json())
            )
            return script.check_ins.pop(0)

        async def activate(request: web.Request) -> web.Response:
            script.requests.append(
                ("activate", dict(request.headers), await request.json())
            )
            return web.Response(status=script.activations.pop(0))

        app = web.Application()
        app.router.add_post("/xiaozhi/ota/", check_in)
        app.router.add_post("/xiaozhi/ota/activate", activate)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/xiaozhi/ota/"))

    yield serve
    for server in servers:
        await server.close()


def ota_json(**sections: Any) -> web.Response:
    return web.json_response({"firmware": {"version": "1.9.2", "url": ""}, **sections})


async def test_the_pairing_loop_follows_the_firmware(ota_server: Any) -> None:
    websocket = {"url": "ws://ha/xiaozhi/v1/", "token": "t", "version": 2}
    script = ScriptedOta(
        check_ins=[
            web.json_response(
                {"message": "slow down"}, status=429, headers={"Retry-After": "0"}
            ),
            ota_json(activation={"code": "111111", "message": "请输入"}),
            ota_json(activation={"code": "222222", "challenge": "c"}),
            ota_json(activation={"code": "222222", "challenge": "c"}),
            ota_json(activation={"code": "333333", "challenge": "d"}),
            ota_json(websocket=websocket, activation="ignored"),
        ],
        activations=[202, 500, 202, 202, 404, 200],
        requests=[],
    )
    url = await ota_server(script)
    identity = DeviceState(mac=MAC, client_id=DEFAULT_CLIENT_ID)
    shown: list[Activation] = []

    async def show(activation: Activation) -> None:
        shown.append(activation)

    async with aiohttp.ClientSession() as http:
        client = OtaClient(http, url, identity, "en-US")
        settings = await obtain_websocket(
            client, show, timing=PairingTiming(poll_s=0.01, retry_s=0.01, attempts=3)
        )

    assert settings == WebsocketSettings("ws://ha/xiaozhi/v1/", "t", 2)
    # A code is shown once, however often it is handed out again.
    assert shown == [
        Activation("111111", "请输入", None),
        Activation("222222", "", "c"),
        Activation("333333", "", "d"),
    ]
    kinds = [kind for kind, _, _ in script.requests]
    assert kinds == [
        "check-in",
        "check-in",  # no challenge: no polling, check in again later
        "check-in",
        *("activate",) * 3,  # 202, 500, 202: out of attempts, check in again
        "check-in",
        "activate",  # 202
        "activate",  # 404: no pairing in progress: check in at once
        "check-in",
        "activate",  # 200: activated
        "check-in",
    ]
    _, headers, body = script.requests[0]
    assert headers["Device-Id"] == MAC
    assert headers["Client-Id"] == DEFAULT_CLIENT_ID
    assert headers["Activation-Version"] == "1"
    assert headers["User-Agent"] == "xiaozhi-simulator/1.9.2"
    assert headers["Accept-Language"] == "en-US"
    assert body["mac_address"] == MAC
    assert body["uuid"] == DEFAULT_CLIENT_ID
    assert body["application"]["version"] == "1.9.2"
    assert body["language"] == "en-US"
    assert next(body for kind, _, body in script.requests if kind == "activate") == {}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (ota_json(), "answered neither a code nor WebSocket settings"),
        (
            ota_json(activation={"message": "no code"}),
            "answered neither a code nor WebSocket settings",
        ),
        (web.json_response(["no"]), "the OTA answer is not a JSON object"),
        (web.Response(text="<html>"), "is not JSON"),
        (
            ota_json(websocket={"token": "t"}),
            "unusable OTA answer: websocket settings without a URL",
        ),
        (
            web.json_response({"message": "busy pairing"}, status=503),
            "answered with HTTP 503: busy pairing",
        ),
        (web.Response(status=500, text="oops"), "answered with HTTP 500: oops"),
        (web.json_response([1], status=502), "answered with HTTP 502: [1]"),
    ],
    ids=[
        "empty",
        "no-code",
        "list",
        "html",
        "no-url",
        "busy",
        "text-error",
        "json-error",
    ],
)
async def test_unusable_ota_answers(
    ota_server: Any, answer: web.Response, error: str
) -> None:
    url = await ota_server(ScriptedOta([answer], [], []))

    async def show(activation: Activation) -> None:
        raise AssertionError(activation)

    async with aiohttp.ClientSession() as http:
        client = OtaClient(http, url, DeviceState(mac=MAC, client_id="c"), "zh-CN")
        with pytest.raises(SimulatorError, match=re.escape(error)):
            await obtain_websocket(client, show)


async def test_activation_against_nothing(socket_enabled: None) -> None:
    url = f"http://127.0.0.1:{unused_port()}/xiaozhi/ota/"
    async with aiohttp.ClientSession() as http:
        client = OtaClient(http, url, DeviceState(mac=MAC, client_id="c"), "zh-CN")
        with pytest.raises(
            SimulatorError, match=r"^cannot reach Home Assistant at .*/activate: "
        ):
            await client.activate()


# ---------------------------------------------------------------- the device


async def test_the_device_survives_garbage_and_reports_the_close(
    socket_enabled: None,
) -> None:
    """As the firmware: unparsable messages are skipped, the close is kept."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        message = await ws.receive()
        assert message.type is WSMsgType.TEXT
        await ws.send_str("not json")
        await ws.send_str("[1, 2]")
        await ws.send_bytes(b"\x00\x02")  # a truncated version 2 header
        await ws.send_str(
            json.dumps({"type": "hello", "transport": "websocket", "session_id": "s1"})
        )
        json_frame = json.dumps({"type": "tts", "state": "start"}).encode()
        await ws.send_bytes(
            b"\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"
            + len(json_frame).to_bytes(4, "big")
            + json_frame
        )
        await ws.close(code=4005, message=b"bye")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            device = SimulatedDevice(
                http, str(server.make_url("/ws")), token=None, protocol_version=2
            )
            hello = await device.open()
            assert hello["session_id"] == "s1"
            assert device.server_sample_rate == RATE_OUT  # not announced: 24 kHz
            await device.wait_disconnected()
            assert await device.wait_closed() == (4005, "bye")
            assert device.bad_messages == 3
            assert device.received_types == ["hello", "tts"]
            assert device.speaking
            with pytest.raises(ChannelClosedError, match="closed with code 4005: bye"):
                await device.hello()
    finally:
        await server.close()


async def test_hello_without_answer_times_out(socket_enabled: None) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            device = SimulatedDevice(http, str(server.make_url("/ws")), token="a b")
            assert device.handshake()[0]["Authorization"] == "a b"
            await device.connect()
            with pytest.raises(TimeoutError):
                await device.hello(timeout=0.05)
            await device.close()
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("answer_after", "max_silence"),
    [(8, 3.0), (None, 0.12)],
    ids=["answered", "silent"],
)
async def test_silence_follows_the_utterance_until_the_answer_starts(
    socket_enabled: None, answer_after: int | None, max_silence: float
) -> None:
    """Auto mode: silence frames until ``tts start``, or until the limit."""
    frames: list[int] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str(json.dumps({"type": "hello", "transport": "websocket"}))
        count = 0
        async for message in ws:
            count += message.type is WSMsgType.BINARY
            if count == answer_after:
                await ws.send_str(json.dumps({"type": "tts", "state": "start"}))
        frames.append(count)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    out = io.StringIO()
    console = sim_console.Console(out)
    recorder = TurnRecorder(console)
    try:
        async with aiohttp.ClientSession() as http:
            device = SimulatedDevice(
                http, str(server.make_url("/ws")), token=None, observer=recorder
            )
            await device.open()
            speech = tone(300, 16000, 0.3)  # 5 frames
            await speak(
                device, speech, recorder, console, manual=False, max_silence=max_silence
            )
            await device.close()
            async with asyncio.timeout(TIMEOUT):
                while not frames:
                    await asyncio.sleep(0.01)
    finally:
        await server.close()
    printed = out.getvalue()
    assert "→ end of speech" in printed
    assert "→ audio: silence until Home Assistant answers" in printed
    if answer_after is None:
        assert frames == [5 + 2]  # 0.12 s of 60 ms frames
        assert "→ audio: stopped after 0.12 s of silence" in printed
    else:
        assert recorder.reply_started.is_set(), (printed, frames)
        # Stopped at tts start (a few frames may be on their way), long before
        # the 3 s limit.
        assert answer_after <= frames[0] < answer_after + 20
        assert "stopped after" not in printed


# ---------------------------------------------------------------- pure parts


def test_identity_is_kept_per_device_and_server() -> None:
    saved = DeviceState(
        mac=MAC,
        client_id=DEFAULT_CLIENT_ID,
        ota_url="http://a/xiaozhi/ota/",
        websocket=WebsocketSettings("ws://a/xiaozhi/v1/", "t", 1),
    )
    assert sim_state.resolve_identity(saved, None, saved.ota_url) is saved
    assert sim_state.resolve_identity(saved, MAC, saved.ota_url) is saved
    # Another server: same device, not paired there.
    other = sim_state.resolve_identity(saved, None, "http://b/xiaozhi/ota/")
    assert (other.mac, other.client_id, other.websocket) == (
        MAC,
        DEFAULT_CLIENT_ID,
        None,
    )
    # Another MAC: another device.
    new = sim_state.resolve_identity(saved, "02:00:00:00:00:01", saved.ota_url)
    assert new.mac == "02:00:00:00:00:01"
    assert new.client_id != DEFAULT_CLIENT_ID
    fresh = sim_state.resolve_identity(None, None, "http://a/xiaozhi/ota/")
    first_octet = int(fresh.mac.split(":")[0], 16)
    assert first_octet & 0x03 == 0x02  # locally administered, unicast
    assert DeviceState.from_json(saved.to_json()) == saved
    assert DeviceState.from_json(fresh.to_json()) == fresh


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([], "not an object"),
        ({"token": "t"}, "without a URL"),
        ({"url": "ws://a", "token": 5}, "token is not a string"),
        ({"url": "ws://a", "version": "2"}, "version is not a number"),
        ({"url": "ws://a", "version": True}, "version is not a number"),
    ],
)
def test_websocket_settings_are_checked(data: Any, error: str) -> None:
    with pytest.raises(sim_state.InvalidSettingsError, match=error):
        WebsocketSettings.from_json(data)
    assert WebsocketSettings.from_json({"url": "ws://a", "version": 0}).version == 1


def test_a_state_with_bad_settings_is_refused() -> None:
    data = DeviceState(mac=MAC, client_id="c").to_json()
    with pytest.raises(StateFileError, match="without a URL"):
        DeviceState.from_json({**data, "websocket": {}})
    with pytest.raises(StateFileError, match="not a MAC address"):
        DeviceState.from_json({**data, "mac": "x"})
    with pytest.raises(StateFileError, match="bad ota_url"):
        DeviceState.from_json({**data, "ota_url": 3})


def test_urls_and_voices() -> None:
    assert checkin.ota_url("http://ha:8123/") == "http://ha:8123/xiaozhi/ota/"
    assert (
        checkin.activate_url("http://ha/xiaozhi/ota/")
        == "http://ha/xiaozhi/ota/activate"
    )
    assert checkin.activate_url("http://ha/ota") == "http://ha/ota/activate"
    assert [
        audio.espeak_voice(tag)
        for tag in ("zh-CN", "zh", "zh_TW", "zh-HK", "yue", "en-US", "", "de")
    ] == ["cmn", "cmn", "cmn", "yue", "yue", "en-us", "en", "de"]


def test_speech_end_and_frames() -> None:
    frame = 1920
    speech = tone(300, 16000, 0.5)
    quiet = bytes(frame * 3)
    assert audio.speech_frames(speech + quiet, frame) == -(-len(speech) // frame)
    assert audio.speech_frames(quiet, frame) == 0
    assert audio.speech_frames(b"", frame) == 0
    frames = split_frames(bytes(frame + 2), frame)
    assert [len(f) for f in frames] == [frame, frame]
    assert frames[1] == bytes(frame)


def test_wav_input_of_any_format() -> None:
    pcm = tone(300, 8000, 0.5)
    converted = audio.wav_to_uplink_pcm(pcm_to_wav(pcm, 8000))
    assert len(converted) == pytest.approx(16000, abs=64)
    assert dominant_hz(converted, 16000) == pytest.approx(300, abs=5)
    unsigned = ((np.frombuffer(pcm, "<i2") >> 8) + 128).astype(np.uint8).tobytes()
    converted = audio.wav_to_uplink_pcm(pcm_to_wav(unsigned, 8000, width=1))
    assert dominant_hz(converted, 16000) == pytest.approx(300, abs=5)
    with pytest.raises(SimulatorError, match="the audio is empty"):
        audio.wav_to_uplink_pcm(pcm_to_wav(b"", 8000))


def test_console_lines() -> None:
    out = io.StringIO()
    ticks = iter([10.0, 10.25, 11.5])
    console = sim_console.Console(out, clock=lambda: next(ticks))
    console.received({"type": "stt", "text": "你好"})
    console.sent({"type": "listen"})
    assert out.getvalue() == (
        '[  0.250] ← {"type":"stt","text":"你好"}\n[  1.500] → {"type":"listen"}\n'
    )
    assert sim_console.big_text("10") == [
        "  █     ███",
        " ██    █   █",
        "  █    █   █",
        "  █    █   █",
        " ███    ███",
    ]
    assert sim_console.big_text("1-", ink="#")[1] == " ##"
    banner = sim_console.activation_banner("123456", "", MAC)
    assert "  Activation code: 1 2 3 4 5 6" in banner
    assert f'  "Xiaozhi device {MAC}" → Add → type the code.' in banner


def test_timing_line() -> None:
    assert Timing(0.8123, 1.2344, 3.456).line() == (
        "timing: end of speech → stt 0.812 s, → first audio 1.234 s, → tts stop 3.456 s"
    )
    assert Timing(None, None, None).line() == (
        "timing: end of speech → stt n/a, → first audio n/a, → tts stop n/a"
    )
    recorder = TurnRecorder(sim_console.Console(io.StringIO()), clock=lambda: 5.0)
    recorder.json_received({"type": "tts", "state": "stop"})  # not speaking: ignored
    assert not recorder.reply_finished.is_set()
    assert recorder.timing(None) == Timing(None, None, None)


def test_board_tools() -> None:
    board = SimBoard()
    status, set_volume = board.tools()
    assert status.callback is not None
    assert json.loads(status.callback({}))["audio_speaker"] == {"volume": 70}
    assert set_volume.callback is not None
    assert set_volume.callback({"volume": 30}) is True
    assert board.volume == 30
    for bad in ({}, {"volume": True}, {"volume": "5"}, {"volume": 101}, {"volume": -1}):
        with pytest.raises(ValueError, match="Missing valid argument: volume"):
            set_volume.callback(bad)
    assert board.volume == 30


def test_the_otto_board_and_a_camera_from_the_command_line(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    options = parse_options(["--board", "otto", "--photo", str(photo)])

    assert "self.otto.action" in {tool.name for tool in options.tools()}
    camera = options.camera()
    assert camera is not None
    assert camera.jpeg == photo.read_bytes()
    assert parse_options([]).camera() is None
    assert "self.otto.action" not in {tool.name for tool in parse_options([]).tools()}

    photo.write_bytes(b"GIF89a")
    with pytest.raises(SimulatorError, match="is not a JPEG"):
        options.camera()
    with pytest.raises(SimulatorError, match="cannot read"):
        parse_options(["--photo", str(tmp_path / "missing.jpg")]).camera()


# ---------------------------------------------------------------- --stay


def entity_of(
    hass: HomeAssistant, entry: MockConfigEntry, domain: str, key: str
) -> str:
    """The entity id of the device's entity of ``domain`` whose id names ``key``."""
    (entity_id,) = [
        e.entity_id
        for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        if e.domain == domain and key in e.entity_id
    ]
    return entity_id


async def test_staying_connected_plays_announcements_and_takes_the_volume(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    paired_state: Path,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    programs: FakePrograms,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text("".join(ANSWER)))
    sim = start(
        *("--ha", ha_url_of(paired_state), "--state-file", str(paired_state)),
        *("--say", TRANSCRIPT, "--no-save", "--play", "--stay"),
    )
    await sim.out.wait_for(
        r"staying connected, idle, until nothing comes from Home"
        r" Assistant for 120 s"
    )
    # The answer was reported before the stay, with its timing.
    assert f"answer: {' '.join(ANSWER)}" in sim.out.getvalue()
    assert any(TIMING_LINE.match(line) for line in sim.out.lines())

    async with asyncio.timeout(TIMEOUT):
        await ha_core.services.async_call(
            "assist_satellite",
            "announce",
            {
                "entity_id": entity_of(ha_core, device_entry, "assist_satellite", ""),
                "message": "晚饭好了",
                "preannounce": False,
            },
            blocking=True,
        )
    line = await sim.out.wait_for(r"announcement: 晚饭好了 \((\d+\.\d\d) s of audio\)")
    spoken = fake_provider.speech.pcm_bytes("晚饭好了") / 2 / RATE_OUT
    # All of it, and at most the last frames' padding more (printed to 10 ms).
    assert -0.01 <= float(line[1]) - spoken <= 3 * FRAME_BYTES_OUT / 2 / RATE_OUT + 0.01
    # Played like the answer: the answer first, then the announcement.
    await sim.out.wait_for("announcement played with paplay")
    played = programs.played_wavs()
    assert len(played) == 2
    assert len(parse_wav(played[1]).pcm) / 2 / RATE_OUT == pytest.approx(
        float(line[1]), abs=0.01
    )

    volume = entity_of(ha_core, device_entry, "number", "volume")
    async with asyncio.timeout(TIMEOUT):
        await ha_core.services.async_call(
            "number", "set_value", {"entity_id": volume, "value": 30}, blocking=True
        )
    await sim.out.wait_for(
        r'"name":"self\.audio_speaker\.set_volume","arguments":'
        r'\{"volume":30\}'
    )
    assert ha_core.states.get(volume).state == "30"  # type: ignore[union-attr]

    # Home Assistant ends it (here: the device's entry is unloaded).
    assert await ha_core.config_entries.async_unload(device_entry.entry_id)
    assert await sim.result() == 0, sim.err.getvalue()
    assert sim.out.lines()[-1].endswith("; the stay is over")
    assert "Home Assistant closed the connection with code" in sim.out.lines()[-1]


async def test_a_stay_ends_when_nothing_comes_for_its_seconds(
    device_entry: MockConfigEntry,
    paired_state: Path,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    programs: FakePrograms,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text("".join(ANSWER)))

    sim = await run(
        *("--ha", ha_url_of(paired_state), "--state-file", str(paired_state)),
        *("--say", TRANSCRIPT, "--no-save", "--manual", "--stay", "0.3"),
    )

    assert await sim.result() == 0, sim.err.getvalue()
    assert sim.out.lines()[-1].endswith(
        "nothing from Home Assistant for 0.3 s: the channel timed out, as the"
        " firmware's does; closing"
    )
    assert "announcement:" not in sim.out.getvalue()


def test_stay_options() -> None:
    assert parse_options([]).stay is None
    assert parse_options(["--stay"]).stay == 120.0
    assert parse_options(["--stay", "30"]).stay == 30.0


async def test_an_announcement_that_cannot_be_played_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_program(tmp_path, "paplay", "echo 'device busy' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    out = Transcript()
    simulation = Simulation(
        parse_options(["--play", "--stay"]), sim_console.Console(out)
    )

    await simulation._play_announcement(pcm_to_wav(tone(440, RATE_OUT, 0.1), RATE_OUT))

    assert out.lines()[-1].endswith(
        "(not playing the announcement: paplay could not play the audio: device busy)"
    )
