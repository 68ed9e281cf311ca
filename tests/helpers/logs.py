"""Waiting for a log line, as an event (no polling, no sleeps)."""

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
import logging


class LogWaiter(logging.Handler):
    """Collects the integration's log records and wakes whoever waits for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def matching(self, text: str, level: int | None = None) -> list[logging.LogRecord]:
        return [
            record
            for record in self.records
            if text in record.getMessage()
            and (level is None or record.levelno == level)
        ]

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 10.0
    ) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@contextmanager
def log_waiter(name: str = "custom_components.xiaozhi") -> Iterator[LogWaiter]:
    """Collect the records of ``name`` (and its children) at every level."""
    logger = logging.getLogger(name)
    waiter = LogWaiter()
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(waiter)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(previous)
