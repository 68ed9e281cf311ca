"""Home Assistant's timers on a Xiaozhi device: started there, shown, rung, and told when lost.

HA's timer intents ("set a timer for 5 minutes", "还剩多久", "取消计时器") and the
Assist API's timer tools work only for a device that registered a timer handler;
each device's assist satellite registers a :class:`DeviceTimers` for as long as
it exists (as HA's VoIP satellites do), so every paired device takes timers.

When a timer finishes, the device rings the first way that works:

1. Its voice session is open: once the answer playing (if any) has ended, at
   most 30 s later, the satellite announces "{timer}计时器时间到了" in the
   device's language, after the chime (``chime.py``: our own audio, since the
   firmware drops sounds in a session). A turn listening at that moment is
   interrupted: the user set the timer for this.
2. Its link is up without a session (an always-connected transport, idle): an
   ``alert`` (the firmware shows it and plays its own chime), repeated 3 times
   20 s apart until the device opens a session (the user woke it).
3. Otherwise (WebSocket devices between conversations, devices offline, or the
   ringing failed): a persistent notification in Home Assistant says which timer
   finished when, and that the device could not ring.

On an idle always-connected device, running timers are shown as a text line
("计时器 泡茶 · 18:05 响"), updated on each change and cleared when none runs;
in a session the assistant's answer says it already.

Home Assistant keeps no timers across restarts and says nothing about it:
running timers are kept in ``timer_store.py``, and at the next start a
notification per device lists the timers the restart cancelled.
"""

import asyncio
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Final, Protocol

from homeassistant.components import persistent_notification
from homeassistant.components.intent import (
    TimerEventType,
    TimerInfo,
    async_register_timer_handler,
)
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import translation
from homeassistant.util import dt as dt_util
from homeassistant.util.hass_dict import HassKey

from ..const import DOMAIN, LOGGER
from ..device.link import DeviceLink
from ..device.messages import device_message, language_family
from ..device.runtime import DeviceConfigEntry, DeviceRuntime
from ..device.supervisor import SessionClosedError
from ..protocol.messages import tts_sentence_start_message
from .chime import CHIME_MEDIA_ID
from .timer_store import StoredTimer, TimerStore

DATA_TIMER_STORE: HassKey[TimerStore] = HassKey(f"{DOMAIN}_timers")
# The MACs of the devices whose timers the last stop dropped (their screens may
# still show them).
DATA_LOST_TIMER_DEVICES: HassKey[set[str]] = HassKey(f"{DOMAIN}_lost_timer_devices")

# How long a ring waits for the answer playing to end.
SPEAKING_WAIT_S: Final = 30.0
ALERT_REPEATS: Final = 3
ALERT_INTERVAL_S: Final = 20.0
ALERT_EMOTION: Final = "surprised"
# Timers shown at once on the device's screen.
MAX_SHOWN: Final = 3


class TimerSatellite(Protocol):
    """What the timers need of the device's assist satellite."""

    @property
    def hass(self) -> HomeAssistant:
        """Home Assistant."""

    @property
    def entry(self) -> DeviceConfigEntry:
        """The device's entry."""

    @property
    def device_language(self) -> str | None:
        """The language the device speaks."""

    async def async_internal_announce(
        self,
        message: str | None = None,
        media_id: str | None = None,
        preannounce: bool = True,
        preannounce_media_id: str = ...,
    ) -> None:
        """Play an announcement on the device (HA's satellite API)."""


# ---------------------------------------------------------------- texts


def _duration_words(seconds: int, language: str | None) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    words = [
        device_message(key, language).format(n=count)
        for key, count in (
            ("duration_hours", hours),
            ("duration_minutes", minutes),
            ("duration_seconds", secs),
        )
        if count
    ]
    joiner = " " if language_family(language) == "en" else ""
    return joiner.join(words) or device_message("duration_seconds", language).format(
        n=0
    )


def timer_label(timer: TimerInfo | StoredTimer, language: str | None) -> str:
    """Return how the device names a timer: its name, else its length."""
    seconds = timer.created_seconds if isinstance(timer, TimerInfo) else timer.seconds
    return timer.name or _duration_words(seconds, language)


def finished_message(timer: TimerInfo, language: str | None) -> str:
    """Return what the device says when ``timer`` finishes."""
    return device_message("timer_finished", language).format(
        timer=timer_label(timer, language)
    )


def running_line(timer: TimerInfo, language: str | None) -> str:
    """Return the device's line for a running (or paused) timer."""
    label = timer_label(timer, language)
    if not timer.is_active:
        return device_message("timer_paused", language).format(
            timer=label, left=clock_text(timer.seconds_left)
        )
    rings = dt_util.now() + timedelta(seconds=timer.seconds_left)
    return device_message("timer_rings_at", language).format(
        timer=label, time=rings.strftime("%H:%M")
    )


def clock_text(seconds: int) -> str:
    """Return a length as H:MM:SS or M:SS, readable in any language."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _notification_label(timer: TimerInfo | StoredTimer) -> str:
    seconds = timer.created_seconds if isinstance(timer, TimerInfo) else timer.seconds
    if timer.name:
        return f"“{timer.name}” ({clock_text(seconds)})"
    return clock_text(seconds)


async def _async_ha_texts(hass: HomeAssistant, *keys: str) -> list[str]:
    """Return messages in Home Assistant's language (our ``exceptions`` texts)."""
    texts = await translation.async_get_translations(
        hass, hass.config.language, "exceptions", {DOMAIN}
    )
    return [
        texts.get(f"component.{DOMAIN}.exceptions.{key}.message", key) for key in keys
    ]


# ---------------------------------------------------------------- waiting


async def _async_wait_for(
    runtime: DeviceRuntime, predicate: Callable[[], bool], seconds: float
) -> bool:
    """Wait until the device's state makes ``predicate`` true; False after ``seconds``."""
    if predicate():
        return True
    reached = asyncio.Event()

    @callback
    def check() -> None:
        if predicate():
            reached.set()

    unsubscribe = runtime.async_add_listener(check)
    try:
        async with asyncio.timeout(seconds):
            await reached.wait()
    except TimeoutError:
        return False
    finally:
        unsubscribe()
    return True


# ---------------------------------------------------------------- one device


class DeviceTimers:
    """The timers of one device: its timer handler, what it shows, how it rings.

    Attributes:
        device_id: The device registry id the handler is registered for.
        running: The device's running timers, by id.
        alert_interval: Seconds between the alerts of an idle device.
    """

    def __init__(self, satellite: TimerSatellite, device_id: str) -> None:
        """Serve the timers of the satellite's device; call :meth:`async_start`."""
        self.device_id = device_id
        self.running: dict[str, TimerInfo] = {}
        self.alert_interval = ALERT_INTERVAL_S
        self._satellite = satellite
        self._hass = satellite.hass
        self._entry = satellite.entry
        self._runtime: DeviceRuntime = satellite.entry.runtime_data
        self._store = self._hass.data[DATA_TIMER_STORE]
        self._rings: set[asyncio.Task[None]] = set()
        self._shown: str | None = None
        self._clear_screen = False
        self._link: DeviceLink | None = None
        self._in_session = False

    @callback
    def async_start(self) -> CALLBACK_TYPE:
        """Register the timer handler and follow the device; returns the undo.

        Timers keep running in Home Assistant meanwhile (an entry reload): the
        next handler gets their events, and the store keeps them.
        """
        lost = self._hass.data.get(DATA_LOST_TIMER_DEVICES, set())
        # The device may still show timers a restart dropped.
        self._clear_screen = self._runtime.mac in lost
        lost.discard(self._runtime.mac)
        undo_handler = async_register_timer_handler(
            self._hass, self.device_id, self._async_handle_timer
        )
        undo_listener = self._runtime.async_add_listener(self._async_device_changed)
        self._async_device_changed()

        @callback
        def stop() -> None:
            undo_handler()
            undo_listener()
            for task in list(self._rings):
                task.cancel()

        return stop

    @property
    def ringing(self) -> bool:
        """Return whether a finished timer is still being rung."""
        return bool(self._rings)

    @property
    def _language(self) -> str | None:
        return self._satellite.device_language

    @callback
    def _async_handle_timer(self, event: TimerEventType, timer: TimerInfo) -> None:
        """Take one of Home Assistant's timer events (a sync callback of HA's)."""
        LOGGER.debug("Timer %s of %s: %s", timer.id, self._entry.title, event)
        if event in (TimerEventType.STARTED, TimerEventType.UPDATED):
            self.running[timer.id] = timer
            self._store.async_keep(
                StoredTimer.of(
                    timer, self.device_id, self._runtime.mac, self._entry.title
                )
            )
        else:
            self.running.pop(timer.id, None)
            self._store.async_forget([timer.id])
        if event is TimerEventType.FINISHED:
            task = self._entry.async_create_background_task(
                self._hass, self._async_ring(timer), f"xiaozhi timer {timer.id}"
            )
            self._rings.add(task)
            task.add_done_callback(self._rings.discard)
        self._async_show_running()

    # Showing -------------------------------------------------------------------

    def _idle_lasting_link(self) -> DeviceLink | None:
        """Return the device's link when it is up without a voice session."""
        link = self._runtime.link
        if (
            link is None
            or link.closed
            or link.session is not None
            or link.transport.session_ends_connection
        ):
            return None
        return link

    @callback
    def _async_device_changed(self) -> None:
        """Show the timers again when a link comes up or a session ends."""
        link = self._runtime.link
        in_session = link is not None and link.session is not None
        if link is not self._link or in_session != self._in_session:
            self._link, self._in_session = link, in_session
            self._shown = None
            self._async_show_running()

    @callback
    def _async_show_running(self) -> None:
        link = self._idle_lasting_link()
        if link is None:
            return
        lines = [
            running_line(timer, self._language)
            for timer in sorted(self.running.values(), key=lambda t: t.seconds_left)
        ][:MAX_SHOWN]
        text = "\n".join(lines)
        if text == self._shown or not (text or self._shown or self._clear_screen):
            return  # shown already, or nothing shown that needs clearing
        self._shown = text
        self._clear_screen = False
        link.create_task(
            link.send_json(
                tts_sentence_start_message(text, session_id=link.session_id)
            ),
            "show timers",
        )

    # Ringing -------------------------------------------------------------------

    async def _async_ring(self, timer: TimerInfo) -> None:
        if await self._async_ring_in_session(timer):
            return
        if await self._async_alert(timer):
            return
        await self._async_notify(timer)

    async def _async_ring_in_session(self, timer: TimerInfo) -> bool:
        session = self._runtime.session
        if session is None or not session.ready:
            return False

        def quiet() -> bool:
            current = self._runtime.session
            return current is None or not current.speaking

        await _async_wait_for(self._runtime, quiet, SPEAKING_WAIT_S)
        current = self._runtime.session
        if current is None or not current.ready:
            return False
        try:
            await self._satellite.async_internal_announce(
                finished_message(timer, self._language),
                preannounce_media_id=CHIME_MEDIA_ID,
            )
        except HomeAssistantError as err:
            LOGGER.info(
                "%s could not ring its timer in the conversation: %s",
                self._entry.title,
                err,
            )
            return False
        return True

    async def _async_alert(self, timer: TimerInfo) -> bool:
        """Alert on the device's screen, repeating while it stays idle."""
        link = self._runtime.link
        if link is None or link.closed:
            return False
        title = device_message("timer_title", self._language)
        message = finished_message(timer, self._language)
        repeats = 1 if link.session is not None else ALERT_REPEATS
        for attempt in range(repeats):
            if attempt and await _async_wait_for(
                self._runtime,
                lambda: (
                    self._runtime.session is not None or self._runtime.link is not link
                ),
                self.alert_interval,
            ):
                break  # the user woke the device (or it went away)
            try:
                await link.send_alert(title, message, ALERT_EMOTION)
            except SessionClosedError:
                return attempt > 0
        return True

    async def _async_notify(self, timer: TimerInfo) -> None:
        title, text = await _async_ha_texts(
            self._hass, "timer_notification_title", "timer_not_rung"
        )
        persistent_notification.async_create(
            self._hass,
            text.format(
                device=self._entry.title,
                timer=_notification_label(timer),
                time=dt_util.now().strftime("%H:%M"),
            ),
            title=title,
            notification_id=f"{DOMAIN}_timer_{timer.id}",
        )


# ---------------------------------------------------------------- restarts


async def async_setup_timers(hass: HomeAssistant) -> None:
    """Keep our devices' timers from now on; tell the user what the last stop lost.

    Call once per Home Assistant run, before devices are set up.
    """
    store = hass.data[DATA_TIMER_STORE] = TimerStore(hass)
    lost = await store.async_take_lost()
    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, store.async_mark_stopped)
    hass.data[DATA_LOST_TIMER_DEVICES] = {timer.mac for timer in lost}
    if not lost:
        return
    title, text = await _async_ha_texts(hass, "timers_lost_title", "timers_lost")
    for device_id, timers in _by_device(lost).items():
        persistent_notification.async_create(
            hass,
            text.format(
                device=timers[0].device_name,
                timers=", ".join(_lost_line(timer) for timer in timers),
            ),
            title=title,
            notification_id=f"{DOMAIN}_timers_lost_{device_id}",
        )


def _by_device(timers: Iterable[StoredTimer]) -> dict[str, list[StoredTimer]]:
    grouped: dict[str, list[StoredTimer]] = {}
    for timer in timers:
        grouped.setdefault(timer.device_id, []).append(timer)
    return grouped


def _lost_line(timer: StoredTimer) -> str:
    """One lost timer: its name or length, and when it would have rung."""
    rings_at = timer.rings_at
    if rings_at is None:
        return f"{_notification_label(timer)} ({clock_text(timer.seconds_left)} ⏸)"
    return f"{_notification_label(timer)} → {dt_util.as_local(rings_at):%H:%M}"
