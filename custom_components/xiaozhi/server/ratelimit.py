"""Per-key token buckets and throttled log lines (pure, no Home Assistant)."""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
import logging
import time
from typing import Any


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Allows `burst` requests at once per key, refilled at `rate` per second.

    Only the `max_keys` most recently seen keys are remembered, so a flood of
    addresses cannot grow memory; a forgotten key starts again with a full bucket.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Set the refill rate, the burst size and the memory bound."""
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Take one token for `key`; return False when its bucket is empty."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, updated=now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
        self._buckets[key] = bucket
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def retry_after(self, key: str) -> float:
        """Return the seconds until `key` has a token again."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.tokens >= 1.0:
            return 0.0
        return (1.0 - bucket.tokens) / self._rate


class LogThrottle:
    """Lets through ``burst`` log lines at once, refilled at ``rate`` per second.

    A line that is let through says how many were left out since the last one,
    so a flood costs a few lines and the count is not lost.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Set the rate and burst of lines."""
        self._limiter = RateLimiter(rate, burst, max_keys=1, clock=clock)
        self.left_out = 0

    def skip(self) -> None:
        """Count a line that is not even offered (its event was dropped silently)."""
        self.left_out += 1

    def log(self, logger: logging.Logger, level: int, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless over the rate; returns whether it was."""
        if not self._limiter.allow(""):
            self.left_out += 1
            return False
        if self.left_out:
            message = f"{message} (%d similar lines left out)"
            args = (*args, self.left_out)
            self.left_out = 0
        logger.log(level, message, *args)
        return True
