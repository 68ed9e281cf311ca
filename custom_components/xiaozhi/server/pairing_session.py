"""The connection of a device that is not paired yet: it hears its code, nothing else.

Clients other than the firmware read the WebSocket settings from their *first* OTA
answer and connect before (or instead of) showing a code: xiaozhi-sdk reads
``websocket.token`` unconditionally and tells its user the code only if the server
speaks it; py-xiaozhi keeps the URL of its first answer. So an unpaired device's
OTA answer carries, next to its ``activation``, a ``websocket`` section whose token
was issued with the code (``PendingPairing.token``: random, bound to that
MAC + Client-Id claim, gone with the code). See docs/security.md.

That token opens a :class:`PairingSession` and nothing else: the device's hello
is answered, and its code is shown (the subtitle) and spoken (by the speaker
the integration hands in, through Home Assistant's TTS) after the hello and again
whenever the device is woken (``listen start``/``detect``). No pipeline runs, no
MCP request is made, no entity exists; audio and every other message are
dropped. The session ends when the person types the code (the token then
becomes the device's own, so a client that reconnects with it gets in), when the
code expires, when the device leaves, or with Home Assistant.
"""

import asyncio
from collections.abc import AsyncIterable, Callable, Coroutine, Mapping
import hmac
import secrets
from typing import Any, Final

from homeassistant.core import HomeAssistant, callback

from ..const import LOGGER
from ..device.link import HELLO_TIMEOUT_S, async_transmit, log_excerpt
from ..device.messages import device_message
from ..device.playback import Playback
from ..device.supervisor import SessionClosedError, Supervisor
from ..protocol.firmware import (
    AUDIO_FORMAT,
    DOWNLINK_FRAME_DURATION_MS,
    DOWNLINK_SAMPLE_RATE,
)
from ..protocol.messages import (
    Hello,
    IncomingMessage,
    Listen,
    ListenState,
    encode_message,
    hello_message,
    tts_sentence_start_message,
)
from ..transport.base import EndReason, Transport
from .pairing import PairingRegistry, PendingPairing

type CodeSpeaker = Callable[[str, str], AsyncIterable[bytes]]
"""Says a pairing code (and what to do with it) to a device of a language.

Arguments: the code, the device's language. Yields mono s16le PCM at
:data:`SPEECH_RATE`; nothing when Home Assistant has no TTS engine to speak with.
"""

SPEECH_RATE: Final = 24000
# The woken states after which the code is said again.
_WAKING: Final = frozenset({ListenState.START, ListenState.DETECT})


def code_subtitle(pending: PendingPairing) -> str:
    """Return what the device shows: the activation message and the code."""
    message = device_message("activation", pending.device.language)
    return f"{message}: {pending.code}"


def _claim_key(pending: PendingPairing) -> tuple[str, str]:
    return (pending.device.mac, pending.device.client_id)


def pairing_for_token(
    pairings: PairingRegistry, mac: str, client_id: str, token: str
) -> PendingPairing | None:
    """Return the waiting pairing this handshake's token belongs to, if any.

    The token must be the one issued with the code to the same MAC and Client-Id
    (compared in constant time); an expired or consumed code has none.
    """
    pending = pairings.get(mac, client_id)
    if pending is None or not token:
        return None
    if not hmac.compare_digest(token.encode(), pending.token.encode()):
        return None
    return pending


class PairingSession:
    """An unpaired device connected with its check-in token: it hears its code.

    It takes what a transport's receive loop hands a link (``note_incoming``,
    ``async_handle_message``, ``handle_audio``, ``report_bad_input``, ``end``).

    Attributes:
        mac: The device's MAC.
        name: How log lines name it.
        pending: The pairing whose token opened the session.
        end_reason: Why the session ended, once it has.
        times_spoken: How often the code was played to the end.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        transport: Transport,
        pending: PendingPairing,
        *,
        remaining_s: float,
        speaker: CodeSpeaker | None,
        on_end: Callable[[PairingSession], None],
    ) -> None:
        """Serve the device of ``pending`` for at most ``remaining_s`` (its code's life)."""
        self.hass = hass
        self.transport = transport
        self.pending = pending
        self.mac = pending.device.mac
        self.name = f"unpaired device {self.mac}"
        self.end_reason: EndReason | None = None
        self.times_spoken = 0
        self._remaining_s = remaining_s
        self._speaker = speaker
        self._on_end = on_end
        self._session_id = ""
        self._hello = False
        self._ending = False
        self._dropped_audio = 0
        self._closed = asyncio.Event()
        self._supervisor = Supervisor(hass, mac=self.mac, owner=self.name)
        self._playback: Playback | None = None
        self._speaking: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """Return whether the session has ended."""
        return self._ending

    def start(self) -> None:
        """Wait for the hello; end when the code expires."""
        self._supervisor.call_later(
            "hello",
            HELLO_TIMEOUT_S,
            lambda: self.end(
                EndReason.HELLO_TIMEOUT, f"no hello within {HELLO_TIMEOUT_S:g} s"
            ),
        )
        self._supervisor.call_later(
            "code",
            self._remaining_s,
            lambda: self.end(
                EndReason.SERVER_CLOSED, "the pairing code expired: check in again"
            ),
        )

    # ------------------------------------------------------------ incoming

    def note_incoming(self) -> None:
        """Anything from the device: nothing to track (the code's life bounds us)."""

    def report_bad_input(self, kind: str, detail: object) -> None:
        """Log bad input at debug level: this device is not paired yet."""
        LOGGER.debug("Ignoring %s from %s: %s", kind, self.name, log_excerpt(detail))

    def handle_audio(self, packet: bytes) -> None:
        """Drop the device's audio: nothing listens before it is paired."""
        self._dropped_audio += 1

    async def async_handle_message(self, message: IncomingMessage) -> None:
        """Answer the hello; say the code again when the device is woken."""
        if self._ending:
            return
        match message:
            case Hello():
                await self._async_handle_hello(message)
            case Listen(state=state) if self._hello and state in _WAKING:
                self._speak_code()
            case _:
                LOGGER.debug(
                    "Ignoring %s from %s: it is not paired yet",
                    type(message).__name__,
                    self.name,
                )

    async def _async_handle_hello(self, hello: Hello) -> None:
        if self._hello:
            return
        if hello.audio_params.format != AUDIO_FORMAT:
            self.end(
                EndReason.PROTOCOL_ERROR,
                f"unsupported audio format {hello.audio_params.format!r}",
            )
            return
        self._supervisor.cancel_timer("hello")
        self._hello = True
        self._session_id = secrets.token_hex(8)
        self._playback = Playback(
            self._session_id,
            send_json=self._async_send_json,
            send_audio=self._async_send_audio,
            start_task=lambda coro: self._create_task(coro, "code audio"),
            on_change=lambda: None,
        )
        await self._async_send_json(
            hello_message(
                self._session_id,
                sample_rate=DOWNLINK_SAMPLE_RATE,
                frame_duration=DOWNLINK_FRAME_DURATION_MS,
                **self.transport.server_hello_fields(),
            )
        )
        LOGGER.info("%s connected before it was paired: telling it its code", self.name)
        self._speak_code()

    # ------------------------------------------------------------ speaking

    def _speak_code(self) -> None:
        if self._speaking is not None and not self._speaking.done():
            return
        self._speaking = self._create_task(self._async_speak_code(), "code")

    async def _async_speak_code(self) -> None:
        playback = self._playback
        assert playback is not None
        await playback.start_speaking()
        await self._async_send_json(
            tts_sentence_start_message(
                code_subtitle(self.pending), session_id=self._session_id
            )
        )
        played = True
        if self._speaker is not None:
            try:
                played = await playback.play_pcm(
                    self._speaker(self.pending.code, self.pending.device.language),
                    SPEECH_RATE,
                )
            except SessionClosedError:
                raise
            except Exception as err:  # noqa: BLE001 (any TTS engine's failure)
                LOGGER.warning("Could not speak the code to %s: %s", self.name, err)
        await playback.stop_speaking()
        if played:
            self.times_spoken += 1

    # ------------------------------------------------------------ outgoing

    def _create_task(
        self, coro: Coroutine[Any, Any, None], name: str
    ) -> asyncio.Task[None]:
        return self._supervisor.create_task(coro, name)

    async def _async_send_json(self, message: Mapping[str, Any]) -> None:
        await self._async_transmit(self.transport.send_text, encode_message(message))

    async def _async_send_audio(self, packet: bytes) -> None:
        await self._async_transmit(self.transport.send_audio, packet)

    async def _async_transmit[P: (str, bytes)](
        self, send: Callable[[P], Coroutine[Any, Any, None]], payload: P
    ) -> None:
        if self._ending:
            raise SessionClosedError(f"session of {self.name} has ended")
        await async_transmit(send, payload, self.end)

    # ------------------------------------------------------------ ending

    def end(self, reason: EndReason, detail: str) -> None:
        """End the session now; the connection is closed in the background."""
        if self._ending:
            return
        self._ending = True
        self.end_reason = reason
        LOGGER.debug("Pairing session of %s ended: %s", self.name, log_excerpt(detail))
        if self._playback is not None:
            self._playback.close()
        self._supervisor.close()
        self._on_end(self)
        self.hass.async_create_background_task(
            self._async_close_transport(reason, detail),
            f"xiaozhi {self.mac} pairing close",
            eager_start=False,
        )

    async def _async_close_transport(self, reason: EndReason, detail: str) -> None:
        try:
            await self.transport.close(reason, detail)
        finally:
            self._closed.set()

    async def async_wait_closed(self) -> None:
        """Wait until the session has ended and its connection is closed."""
        await self._closed.wait()


class PairingSessions:
    """The live pairing sessions, one per device (the newest wins).

    At most one per waiting pairing, so their number is bounded by
    ``MAX_PENDING_PAIRINGS``.

    Attributes:
        speaker: Speaks the codes (set by the integration; None: shown only).
    """

    def __init__(self) -> None:
        """Start with none."""
        self.speaker: CodeSpeaker | None = None
        # By claim: a MAC may have several claimants (server/pairing.py), and
        # one claimant's connection must never end another's.
        self._sessions: dict[tuple[str, str], PairingSession] = {}

    def __contains__(self, mac: object) -> bool:
        """Return whether a claimant of ``mac`` has a live pairing session."""
        return any(key[0] == mac for key in self._sessions)

    def get(self, mac: str, client_id: str | None = None) -> PairingSession | None:
        """Return a live pairing session of the MAC (of that claimant), if any."""
        for (session_mac, session_client), session in self._sessions.items():
            if session_mac == mac and client_id in (None, session_client):
                return session
        return None

    @callback
    def async_open(
        self,
        hass: HomeAssistant,
        transport: Transport,
        pending: PendingPairing,
        remaining_s: float,
    ) -> PairingSession:
        """Start the pairing session of ``pending``; an older one of its claimant ends."""
        key = _claim_key(pending)
        if (previous := self._sessions.get(key)) is not None:
            previous.end(EndReason.REPLACED, "replaced by a new connection")
        session = PairingSession(
            hass,
            transport,
            pending,
            remaining_s=remaining_s,
            speaker=self.speaker,
            on_end=self._forget,
        )
        self._sessions[key] = session
        session.start()
        return session

    def _forget(self, session: PairingSession) -> None:
        key = _claim_key(session.pending)
        if self._sessions.get(key) is session:
            del self._sessions[key]

    @callback
    def async_claimed(self, pending: PendingPairing) -> None:
        """End a session of an older claim of this claimant (its code is gone)."""
        session = self._sessions.get(_claim_key(pending))
        if session is not None and session.pending is not pending:
            session.end(
                EndReason.SERVER_CLOSED, "another check-in of the device took over"
            )

    @callback
    def async_paired(self, pending: PendingPairing) -> None:
        """End the MAC's pairing sessions: ``pending``'s code was typed.

        Its claimant may connect as the paired device; the other claimants of the
        MAC lost (their codes are gone with the pairing).
        """
        paired = _claim_key(pending)
        for key, session in list(self._sessions.items()):
            if key == paired:
                # A normal close: clients (xiaozhi-sdk) treat any other code as
                # an error, and this is the end they were waiting for.
                session.end(
                    EndReason.NORMAL, "paired: connect again with the same token"
                )
            elif key[0] == paired[0]:
                session.end(EndReason.SERVER_CLOSED, "another claimant was paired")

    @callback
    def async_void(self, mac: str) -> None:
        """End the MAC's pairing sessions: its codes are void."""
        for key, session in list(self._sessions.items()):
            if key[0] == mac:
                session.end(EndReason.SERVER_CLOSED, "the code is void: check in again")

    def end_all(self, reason: EndReason, detail: str) -> list[PairingSession]:
        """End every pairing session; returns them (to wait for their close)."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.end(reason, detail)
        return sessions
