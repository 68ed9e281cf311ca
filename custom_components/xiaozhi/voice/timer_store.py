"""The timers running on our devices, kept on disk to tell the user what a restart lost.

Home Assistant keeps timers in memory only: when it stops, a running timer is
dropped without an event, and after the restart nothing remembers it (the
device never rings, "how much time is left" finds no timer). We keep each
running timer of our devices in a ``Store`` (``.storage/xiaozhi.timers``) from
its start until it ends, and when Home Assistant stopped. At the next start a
timer that would have rung after the stop, or was paused, was lost, and the
user is told (``timers.async_setup_timers``). One that should have rung before
the stop is not reported: it ended while its device had no timer handler (the
device had been removed, say). Writes are delayed by a second and flushed when
Home Assistant stops.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Self

from homeassistant.components.intent import TimerInfo
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

STORAGE_KEY: Final = "xiaozhi.timers"
STORAGE_VERSION: Final = 1
SAVE_DELAY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class StoredTimer:
    """A running timer of a device, as kept across restarts.

    Attributes:
        id: Home Assistant's timer id.
        device_id: The device registry id of the device it runs on.
        mac: That device's MAC.
        device_name: The device's name when the timer started.
        name: The timer's name, if it has one.
        seconds: How long it was set for.
        ends_at: When it rings (UTC ISO time); None while paused.
        seconds_left: While paused, what was left.
    """

    id: str
    device_id: str
    mac: str
    device_name: str
    name: str | None
    seconds: int
    ends_at: str | None
    seconds_left: int

    @classmethod
    def of(cls, timer: TimerInfo, device_id: str, mac: str, device_name: str) -> Self:
        """Return what is kept of ``timer`` now."""
        left = timer.seconds_left
        ends_at = (
            (dt_util.utcnow() + timedelta(seconds=left)).isoformat()
            if timer.is_active
            else None
        )
        return cls(
            id=timer.id,
            device_id=device_id,
            mac=mac,
            device_name=device_name,
            name=timer.name,
            seconds=timer.created_seconds,
            ends_at=ends_at,
            seconds_left=left,
        )

    @classmethod
    def from_json(cls, data: Any) -> Self | None:
        """Return the stored timer of one JSON item, None if it is not one."""
        if not isinstance(data, Mapping):
            return None
        try:
            timer = cls(
                id=str(data["id"]),
                device_id=str(data["device_id"]),
                mac=str(data.get("mac", "")),
                device_name=str(data["device_name"]),
                name=None if data.get("name") is None else str(data["name"]),
                seconds=int(data["seconds"]),
                ends_at=None if data.get("ends_at") is None else str(data["ends_at"]),
                seconds_left=int(data.get("seconds_left", 0)),
            )
        except KeyError, TypeError, ValueError:
            return None
        return timer

    @property
    def rings_at(self) -> datetime | None:
        """Return when the timer would have rung (None: it was paused)."""
        return None if self.ends_at is None else dt_util.parse_datetime(self.ends_at)


class TimerStore:
    """The running timers of every device of ours, in memory and on disk."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Use ``.storage/xiaozhi.timers``; call :meth:`async_take_lost` once."""
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, STORAGE_KEY)
        self._timers: dict[str, StoredTimer] = {}
        self._stopped_at: datetime | None = None

    async def async_take_lost(self) -> list[StoredTimer]:
        """Return the timers the last run's stop dropped, and forget them on disk.

        Without the stop's time (Home Assistant did not stop cleanly) every kept
        timer counts as lost.
        """
        data = await self._store.async_load() or {}
        items = data.get("timers") if isinstance(data, Mapping) else None
        stopped = data.get("stopped_at") if isinstance(data, Mapping) else None
        stopped_at = (
            dt_util.parse_datetime(stopped) if isinstance(stopped, str) else None
        )
        lost = [
            timer
            for timer in map(StoredTimer.from_json, items or [])
            if timer is not None and _still_running(timer, stopped_at)
        ]
        if data:
            await self._store.async_save(self._data())
        return lost

    @callback
    def async_mark_stopped(self, *_: Any) -> None:
        """Note that Home Assistant stops now (written with the final write)."""
        self._stopped_at = dt_util.utcnow()
        self._store.async_delay_save(self._data, SAVE_DELAY_S)

    @callback
    def async_keep(self, timer: StoredTimer) -> None:
        """Keep (or update) a running timer."""
        self._timers[timer.id] = timer
        self._store.async_delay_save(self._data, SAVE_DELAY_S)

    @callback
    def async_forget(self, timer_ids: Iterable[str]) -> None:
        """Forget timers that ended (or whose device went)."""
        changed = False
        for timer_id in timer_ids:
            changed = self._timers.pop(timer_id, None) is not None or changed
        if changed:
            self._store.async_delay_save(self._data, SAVE_DELAY_S)

    def _data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "timers": [asdict(timer) for timer in self._timers.values()]
        }
        if self._stopped_at is not None:
            data["stopped_at"] = self._stopped_at.isoformat()
        return data


def _still_running(timer: StoredTimer, stopped_at: datetime | None) -> bool:
    """Return whether ``timer`` was running (or paused) when Home Assistant stopped."""
    rings_at = timer.rings_at
    return rings_at is None or stopped_at is None or rings_at > stopped_at
