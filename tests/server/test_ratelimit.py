"""The per-address token bucket."""

from custom_components.xiaozhi.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") == 0.5
    assert limiter.allow("b")
    clock.now += 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")
    clock.now += 100
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("unknown") == 0.0


def test_memory_is_bounded_to_recent_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2, clock=clock)
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    assert limiter.allow("c")  # "a" is forgotten now
    assert limiter.allow("a")
    assert limiter.retry_after("c") > 0
