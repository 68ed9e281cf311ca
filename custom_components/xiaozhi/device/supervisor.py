"""Tasks and timers that end with what started them: a device's link or session.

Everything a link or a voice session runs in the background goes through its
:class:`Supervisor`, so ending the link or session cancels all of it and no task
outlives the device's connection.
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from homeassistant.core import HomeAssistant

from ..const import LOGGER
from ..protocol.mcp import McpClosedError


class SessionClosedError(ConnectionError):
    """The device's link or voice session has ended: nothing more can be sent."""


class Supervisor:
    """The tasks and timers of one link or voice session.

    Task names start with ``xiaozhi <mac>``. A task's exception is logged, unless
    it only says that the link or session ended (:class:`SessionClosedError`,
    :class:`McpClosedError`).
    """

    def __init__(self, hass: HomeAssistant, *, mac: str, owner: str) -> None:
        """Supervise for the device ``mac``; ``owner`` names it in log lines."""
        self._hass = hass
        self._mac = mac
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closed = False

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """Return the tasks still running."""
        return frozenset(self._tasks)

    def create_task[T](
        self, coro: Coroutine[Any, Any, T], name: str
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task that ends with the owner.

        Raises:
            SessionClosedError: The owner has ended.
        """
        if self._closed:
            coro.close()
            raise SessionClosedError(f"session of {self._owner} has ended")
        task = self._hass.async_create_background_task(
            coro, f"xiaozhi {self._mac} {name}", eager_start=False
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(
            error, SessionClosedError | McpClosedError
        ):
            LOGGER.error(
                "Task %s of %s failed", task.get_name(), self._owner, exc_info=error
            )

    def call_later(self, key: str, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` seconds unless the timer is cancelled first."""

        def fire() -> None:
            self._timers.pop(key, None)
            callback()

        self.cancel_timer(key)
        self._timers[key] = self._hass.loop.call_later(delay, fire)

    def cancel_timer(self, key: str) -> None:
        """Cancel the timer ``key`` if it is pending."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Cancel every timer and task (but the one calling) and refuse new ones."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
