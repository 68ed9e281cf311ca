"""``python -m simulator``: a Xiaozhi device against any Home Assistant.

Like the firmware it checks in at Home Assistant's OTA URL; an unknown device
prints (and with ``--play`` speaks) its activation code and waits until a person
enters it in Home Assistant. The identity (MAC, Client-Id) and the WebSocket
settings are kept in a state file, as the firmware keeps them in NVS, so the
next run connects at once. It then connects, exchanges hellos, says one
utterance (a WAV file, or text spoken by espeak-ng) as real-time Opus, prints
every protocol message, saves the answer as WAV and ends with a timing line.
With ``--stay`` it then stays connected, idle, as the firmware does after an
answer (`simulator.stay`): Home Assistant's announcements play, and its volume
and brightness controls reach the board, until the channel times out.

Exit status: 0 when the answer ended with ``tts stop``, 1 on any error (with a
message on standard error), 2 for invalid arguments.
"""

import argparse
import asyncio
from collections.abc import Sequence
import contextlib
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
import sys
from typing import Final, TextIO

import aiohttp

from custom_components.xiaozhi.protocol.codec import pcm_to_wav
from custom_components.xiaozhi.protocol.identity import normalize_mac

from . import audio
from .board import OttoBoard, SimBoard
from .checkin import Activation, OtaClient, PairingTiming, obtain_websocket, ota_url
from .console import Console, activation_banner
from .conversation import TurnRecorder, closed_message, speak, wait_for_answer
from .device import ChannelClosedError, SimCamera, SimTool, SimulatedDevice
from .errors import SimulatorError
from .mqtt_device import MqttRefusedError, MqttSimulatedDevice
from .state import (
    DeviceState,
    StateFileError,
    WebsocketSettings,
    load_state,
    resolve_identity,
    save_state,
)
from .stay import DEFAULT_STAY_S, stay

DEFAULT_HA_URL: Final = "http://localhost:8123"
DEFAULT_LANGUAGE: Final = "zh-CN"
DEFAULT_STATE_FILE: Final = "~/.xiaozhi-sim.json"
DEFAULT_OUT: Final = "reply.wav"
DEFAULT_PAIR_TIMEOUT_S: Final = 600.0
DEFAULT_REPLY_TIMEOUT_S: Final = 60.0
# Home Assistant refuses (4001) a device whose entry it is still setting up.
UNAUTHORIZED_CLOSE_CODE: Final = 4001
CONNECT_ATTEMPTS_AFTER_PAIRING: Final = 5
CONNECT_RETRY_S: Final = 1.0
DEFAULT_UTTERANCES: Final = {"zh": "打开客厅灯", "en": "Turn on the living room light"}


@dataclass(frozen=True, slots=True)
class Options:
    """The command line, parsed."""

    ha_url: str
    mac: str | None
    wav: Path | None
    say: str | None
    language: str
    protocol_version: int | None
    manual: bool
    out: Path | None
    play: bool
    state_file: Path
    skip_ota: bool
    pair_timeout: float
    reply_timeout: float
    poll_interval: float
    board: str = "speaker"
    photo: Path | None = None
    stay: float | None = None
    transport: str = "websocket"

    def tools(self) -> list[SimTool]:
        """Return the MCP tools of the chosen board."""
        return OttoBoard().tools() if self.board == "otto" else SimBoard().tools()

    def camera(self) -> SimCamera | None:
        """Return the camera that sends ``--photo``, if one was given.

        Raises:
            SimulatorError: The file cannot be read or is not a JPEG.
        """
        if self.photo is None:
            return None
        try:
            jpeg = self.photo.read_bytes()
        except OSError as err:
            raise SimulatorError(f"cannot read {self.photo}: {err}") from err
        if not jpeg.startswith(b"\xff\xd8\xff"):
            raise SimulatorError(f"{self.photo} is not a JPEG")
        return SimCamera(jpeg)

    @property
    def utterance_text(self) -> str:
        """Return the text to say when no WAV file is given."""
        if self.say is not None:
            return self.say
        primary = self.language.split("-")[0].lower()
        return DEFAULT_UTTERANCES.get(primary, DEFAULT_UTTERANCES["en"])


def _mac(value: str) -> str:
    try:
        return normalize_mac(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {value!r}")
    return number


def _ha_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"not an http:// or https:// URL: {value!r} (e.g. {DEFAULT_HA_URL})"
        )
    return value.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="simulate-device",
        description="A simulated Xiaozhi device: pairs with Home Assistant like the"
        " firmware, says one utterance and prints the whole exchange with its timing.",
    )
    parser.add_argument(
        "--ha",
        dest="ha_url",
        type=_ha_url,
        default=DEFAULT_HA_URL,
        help=f"Home Assistant's URL as the device would use it (default {DEFAULT_HA_URL})",
    )
    parser.add_argument(
        "--mac", type=_mac, help="the device's MAC (default: a random one, then kept)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--wav", type=Path, help="say this recording (PCM WAV, any rate and channels)"
    )
    source.add_argument(
        "--say",
        metavar="TEXT",
        help="say TEXT with espeak-ng (default: a request to turn on a light)",
    )
    parser.add_argument(
        "--lang",
        dest="language",
        default=DEFAULT_LANGUAGE,
        help=f"the firmware's language, also espeak-ng's (default {DEFAULT_LANGUAGE})",
    )
    parser.add_argument(
        "--protocol-version",
        type=int,
        choices=(1, 2, 3),
        help="binary framing to use (default: what Home Assistant hands out)",
    )
    parser.add_argument(
        "--manual",
        action="store_true",
        help="push to talk: send listen stop after the utterance instead of"
        " silence for Home Assistant's voice activity detection",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"save the answer as this WAV file (default {DEFAULT_OUT})",
    )
    output.add_argument(
        "--no-save",
        dest="out",
        action="store_const",
        const=None,
        help="do not save the answer",
    )
    parser.add_argument(
        "--play",
        action="store_true",
        help="play the answer (and speak the activation code) with paplay, aplay or ffplay",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=Path(DEFAULT_STATE_FILE),
        help=f"where the device keeps its identity and token (default {DEFAULT_STATE_FILE})",
    )
    parser.add_argument(
        "--skip-ota",
        action="store_true",
        help="connect with the saved WebSocket settings without checking in",
    )
    parser.add_argument(
        "--pair-timeout",
        type=_positive,
        default=DEFAULT_PAIR_TIMEOUT_S,
        help=f"seconds to wait for the code to be entered (default {DEFAULT_PAIR_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--reply-timeout",
        type=_positive,
        default=DEFAULT_REPLY_TIMEOUT_S,
        help=f"seconds to wait for the whole answer (default {DEFAULT_REPLY_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--board",
        choices=("speaker", "otto"),
        default="speaker",
        help="the MCP tools to serve: a speaker's, or the Otto robot's (default speaker)",
    )
    parser.add_argument(
        "--photo",
        type=Path,
        help="give the board a camera whose photos are this JPEG",
    )
    parser.add_argument(
        "--transport",
        choices=["websocket", "mqtt"],
        default="websocket",
        help="connect over WebSocket (default) or MQTT+UDP, as the OTA answer "
        "allows (mqtt: the device stays connected and answers MCP while idle)",
    )
    parser.add_argument(
        "--stay",
        type=_positive,
        nargs="?",
        const=DEFAULT_STAY_S,
        metavar="SECONDS",
        help="after the answer, stay connected and idle as the firmware does,"
        " playing announcements and answering MCP (volume, brightness), until"
        " nothing comes from Home Assistant for SECONDS"
        f" (default {DEFAULT_STAY_S:g}, the firmware's channel timeout)",
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive,
        default=PairingTiming().poll_s,
        help="seconds between activation polls (the firmware's 3 by default)",
    )
    return parser


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line (exits with status 2 on invalid arguments)."""
    args = build_parser().parse_args(argv)
    return Options(
        ha_url=args.ha_url,
        mac=args.mac,
        wav=args.wav,
        say=args.say,
        language=args.language,
        protocol_version=args.protocol_version,
        manual=args.manual,
        out=args.out,
        play=args.play,
        state_file=args.state_file.expanduser(),
        skip_ota=args.skip_ota,
        pair_timeout=args.pair_timeout,
        reply_timeout=args.reply_timeout,
        poll_interval=args.poll_interval,
        board=args.board,
        photo=args.photo,
        transport=args.transport,
        stay=args.stay,
    )


class Simulation:
    """One run of the simulator."""

    def __init__(self, options: Options, console: Console) -> None:
        """Prepare a run of ``options`` printing to ``console``."""
        self.options = options
        self.console = console
        self._speaking_code: asyncio.Task[None] | None = None
        self._mac = ""
        # Shown a code in this run: Home Assistant may still be setting it up.
        self._paired_this_run = False

    async def run(self) -> None:
        """Pair if needed, connect, speak, wait for the answer, report.

        Raises:
            SimulatorError: Anything that stops the run, explained.
        """
        utterance = await self._utterance()
        state = await self._identity()
        async with aiohttp.ClientSession() as http:
            try:
                websocket = await self._websocket_settings(http, state)
            except BaseException:
                await self._stop_speaking_code()
                raise
            if self._speaking_code is not None:
                await self._speaking_code  # the code is said to its end
            state = replace(state, websocket=websocket)
            await self._save(state)
            if self.options.transport == "mqtt":
                await self._converse_mqtt(http, state, utterance)
            else:
                await self._converse(http, state, websocket, utterance)

    async def _utterance(self) -> bytes:
        options = self.options
        if options.wav is not None:
            pcm = await audio.load_wav(options.wav)
            self.console.line(f"utterance: {options.wav}")
        else:
            text = options.utterance_text
            self.console.line(f"utterance: {text!r} (espeak-ng, {options.language})")
            pcm = await audio.say(text, options.language)
        return pcm

    async def _identity(self) -> DeviceState:
        path = self.options.state_file
        try:
            saved = await load_state(path)
        except (StateFileError, OSError) as err:
            raise SimulatorError(f"{path}: {err}") from None
        state = resolve_identity(saved, self.options.mac, ota_url(self.options.ha_url))
        self._mac = state.mac
        if state != saved:
            await self._save(state)
        self.console.line(
            f"device {state.mac}, Client-Id {state.client_id} (kept in {path})"
        )
        return state

    async def _save(self, state: DeviceState) -> None:
        try:
            await save_state(self.options.state_file, state)
        except OSError as err:
            raise SimulatorError(
                f"cannot save {self.options.state_file}: {err}"
            ) from None

    async def _websocket_settings(
        self, http: aiohttp.ClientSession, state: DeviceState
    ) -> WebsocketSettings:
        options = self.options
        if options.skip_ota:
            if state.websocket is None:
                raise SimulatorError(
                    f"no saved connection for {options.ha_url} in {options.state_file}:"
                    " run once without --skip-ota"
                )
            return state.websocket
        client = OtaClient(http, state.ota_url, state, options.language)
        self.console.line(f"→ POST {state.ota_url} (OTA check-in)")
        timing = PairingTiming(poll_s=options.poll_interval)
        try:
            async with asyncio.timeout(options.pair_timeout):
                websocket = await obtain_websocket(
                    client, self._show_code, timing=timing
                )
        except TimeoutError:
            raise SimulatorError(
                f"the device was not paired within {options.pair_timeout:g} s"
                " (enter the code in Home Assistant, or raise --pair-timeout)"
            ) from None
        self.console.line(
            f"← websocket {websocket.url} (protocol version {websocket.version})"
        )
        return websocket

    async def _show_code(self, activation: Activation) -> None:
        self._paired_this_run = True
        self.console.line(f"activation code: {activation.code}")
        self.console.lines(
            activation_banner(activation.code, activation.message, self._mac)
        )
        self.console.line("waiting for the code to be entered in Home Assistant...")
        if self.options.play and activation.code:
            await self._stop_speaking_code()
            self._speaking_code = asyncio.create_task(self._speak_code(activation))

    async def _stop_speaking_code(self) -> None:
        if (task := self._speaking_code) is not None:
            task.cancel()
            await asyncio.wait({task})

    async def _speak_code(self, activation: Activation) -> None:
        """Speak the message and the digits one by one, as ShowActivationCode does."""
        text = f"{activation.message} {' '.join(activation.code)}"
        try:
            await audio.play_wav(await audio.synthesize(text, self.options.language))
        except SimulatorError as err:
            self.console.line(f"(not speaking the code: {err})")

    async def _converse(
        self,
        http: aiohttp.ClientSession,
        state: DeviceState,
        websocket: WebsocketSettings,
        utterance: bytes,
    ) -> None:
        options = self.options
        recorder = TurnRecorder(self.console)
        device = await self._connect(http, state, websocket, recorder)
        try:
            await device.listen_start("manual" if options.manual else "auto")
            try:
                end_of_speech = await speak(
                    device, utterance, recorder, self.console, manual=options.manual
                )
            except ConnectionError:
                end_of_speech = None  # closed while speaking: reported below
            await self._await_answer(device, recorder)
            if options.stay is None:
                await device.close()
            await self._report_answer(device, recorder)
            self.console.lines([recorder.timing(end_of_speech).line()])
            if options.stay is not None:
                player = self._play_announcement if options.play else None
                await stay(device, recorder, self.console, options.stay, play=player)
        finally:
            await device.close()

    async def _play_announcement(self, wav: bytes) -> None:
        try:
            player = await audio.play_wav(wav)
        except SimulatorError as err:
            self.console.line(f"(not playing the announcement: {err})")
        else:
            self.console.line(f"announcement played with {player}")

    async def _converse_mqtt(
        self, http: aiohttp.ClientSession, state: DeviceState, utterance: bytes
    ) -> None:
        """Check in for the MQTT section, stay connected, open a channel, talk."""
        options = self.options
        if options.skip_ota:
            raise SimulatorError(
                "--transport mqtt checks in every run (each answer has a new password)"
            )
        answer = await OtaClient(
            http, state.ota_url, state, options.language
        ).check_in()
        if answer.mqtt is None:
            raise SimulatorError(
                "the OTA answer has no mqtt section: the device's connection is set "
                "to WebSocket in Home Assistant, or its MQTT endpoint is not running"
            )
        self.console.line(f"← mqtt {answer.mqtt.get('endpoint')}")
        recorder = TurnRecorder(self.console)
        device = MqttSimulatedDevice(
            answer.mqtt,
            mac=state.mac,
            client_id=state.client_id,
            tools=options.tools(),
            camera=options.camera(),
            observer=recorder,
        )
        end_of_speech: float | None = None
        try:
            try:
                await device.connect()
            except MqttRefusedError as err:
                raise SimulatorError(f"MQTT refused: {err.reason}") from None
            except (OSError, TimeoutError) as err:
                raise SimulatorError(f"cannot connect over MQTT: {err!r}") from None
            self.console.line("connected over MQTT (idle: answering MCP)")
            await device.hello()
            await device.listen_start("manual" if options.manual else "auto")
            try:
                end_of_speech = await speak(
                    device, utterance, recorder, self.console, manual=options.manual
                )
            except ConnectionError:
                end_of_speech = None
            await self._await_answer(device, recorder)
            await device.goodbye()  # the link stays: idle, answering MCP
            await self._report_answer(device, recorder)
            self.console.lines([recorder.timing(end_of_speech).line()])
            if options.stay is not None:
                player = self._play_announcement if options.play else None
                await stay(device, recorder, self.console, options.stay, play=player)
        finally:
            await device.close()

    async def _await_answer(
        self, device: SimulatedDevice, recorder: TurnRecorder
    ) -> None:
        timeout = self.options.reply_timeout
        try:
            async with asyncio.timeout(timeout):
                await wait_for_answer(device, recorder)
        except TimeoutError:
            raise SimulatorError(
                f"no answer within {timeout:g} s (is an Assist pipeline selected"
                " for the device, and does it hear the speech?)"
            ) from None

    async def _connect(
        self,
        http: aiohttp.ClientSession,
        state: DeviceState,
        websocket: WebsocketSettings,
        recorder: TurnRecorder,
    ) -> SimulatedDevice:
        """Open the audio channel; returns the device once the hellos are exchanged.

        A device paired during this run may be refused while Home Assistant still
        sets its entry up: it tries again, as a person would press the button again.
        """
        attempts = CONNECT_ATTEMPTS_AFTER_PAIRING if self._paired_this_run else 1
        attempt = 1
        while True:
            device = SimulatedDevice(
                http,
                websocket.url,
                token=websocket.token or None,
                mac=state.mac,
                client_id=state.client_id,
                protocol_version=self.options.protocol_version or websocket.version,
                tools=self.options.tools(),
                camera=self.options.camera(),
                observer=recorder,
            )
            try:
                await self._open(device)
                return device
            except ChannelClosedError as err:
                await device.close()
                refused = closed_message(err.code, err.reason)
                if err.code != UNAUTHORIZED_CLOSE_CODE or attempt >= attempts:
                    raise SimulatorError(refused + self._refusal_hint()) from None
                self.console.line(f"{refused}; trying again in {CONNECT_RETRY_S:g} s")
            await asyncio.sleep(CONNECT_RETRY_S)
            attempt += 1

    def _refusal_hint(self) -> str:
        if self.options.skip_ota:
            return "; run without --skip-ota to check in (and pair) again"
        return ""

    async def _open(self, device: SimulatedDevice) -> None:
        """Connect and exchange hellos.

        Raises:
            ChannelClosedError: Home Assistant closed the connection at once.
            SimulatorError: Any other failure, explained.
        """
        url = device.url
        self.console.line(
            f"connecting to {url} (protocol version {device.protocol_version})"
        )
        try:
            await device.open()
        except ChannelClosedError:
            raise
        except aiohttp.WSServerHandshakeError as err:
            if err.status == HTTPStatus.UNAUTHORIZED:
                raise SimulatorError(
                    "Home Assistant refused the device's token (HTTP 401: unknown"
                    " device, or a token of an older pairing)" + self._refusal_hint()
                ) from None
            raise SimulatorError(
                f"the WebSocket handshake with {url} failed: HTTP {err.status} {err.message}"
            ) from None
        except (aiohttp.ClientError, OSError) as err:
            raise SimulatorError(f"cannot connect to {url}: {err}") from None
        except TimeoutError:
            raise SimulatorError(
                "Home Assistant did not answer the hello within 10 s"
            ) from None

    async def _report_answer(
        self, device: SimulatedDevice, recorder: TurnRecorder
    ) -> None:
        console = self.console
        if recorder.transcript is not None:
            console.line(f"heard: {recorder.transcript}")
        if recorder.sentences:
            console.line(f"answer: {' '.join(recorder.sentences)}")
        rate = device.server_sample_rate
        pcm = await asyncio.to_thread(device.received_pcm, rate)
        seconds = len(pcm) / 2 / rate
        options = self.options
        if options.out is not None:
            await audio.write_wav(options.out, pcm, rate)
            console.line(
                f"answer audio: {seconds:.2f} s at {rate} Hz saved to {options.out}"
            )
        else:
            console.line(f"answer audio: {seconds:.2f} s at {rate} Hz")
        if options.play and pcm:
            wav = pcm_to_wav(pcm, rate)
            try:
                player = await audio.play_wav(wav)
            except SimulatorError as err:
                console.line(f"(not playing the answer: {err})")
            else:
                console.line(f"played with {player}")


async def async_main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the simulator; returns the exit status.

    Args:
        argv: The arguments (default: the command line).
        out: Where the run is printed (default: standard output).
        err: Where an error is explained (default: standard error).
    """
    options = parse_options(argv)
    console = Console(out or sys.stdout)
    try:
        await Simulation(options, console).run()
    except SimulatorError as error:
        (err or sys.stderr).write(f"error: {error}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line; returns the exit status."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(async_main(argv))
    sys.stderr.write("interrupted\n")
    return 130
