"""The ``fake_provider`` fixture: a started `FakeProvider` per test."""

from collections.abc import AsyncIterator

import pytest

from fake_provider import FakeProvider


@pytest.fixture
async def fake_provider(socket_enabled: None) -> AsyncIterator[FakeProvider]:
    """Yield a started `FakeProvider`; stop it afterwards.

    Requests ``socket_enabled`` because pytest-homeassistant-custom-component
    blocks socket creation; connections stay limited to 127.0.0.1.
    """
    async with FakeProvider() as provider:
        yield provider
