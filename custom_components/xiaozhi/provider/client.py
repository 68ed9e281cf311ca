"""The OpenAI-compatible provider client: construction, validation, errors."""

from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httpx
import httpx2
import openai

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.httpx_client import get_async_client

from ..const import NO_API_KEY, VALIDATION_TIMEOUT
from .presets import PRESET_TITLES

# What the provider and its HTTP client raise: SDK errors, and transport errors
# while a streamed response is read (HA's httpx client or the SDK's own httpx2).
PROVIDER_ERRORS: Final = (openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError)


@dataclass(slots=True)
class ProviderRuntime:
    """What a loaded provider entry holds: the client and what the service offers."""

    client: openai.AsyncOpenAI
    models: list[str] = field(default_factory=list)


type ProviderConfigEntry = ConfigEntry[ProviderRuntime]


def provider_title(preset: str, base_url: str) -> str:
    """Return a readable entry title for a service."""
    if preset in PRESET_TITLES:
        return PRESET_TITLES[preset]
    return urlsplit(base_url).netloc or base_url


def normalize_base_url(url: str) -> str:
    """Return the base URL in the one form used for storage and unique IDs."""
    return url.strip().rstrip("/")


async def async_create_client(
    hass: HomeAssistant, base_url: str, api_key: str | None
) -> openai.AsyncOpenAI:
    """Create a client on Home Assistant's shared HTTP client."""
    client = openai.AsyncOpenAI(
        api_key=api_key or NO_API_KEY,
        base_url=normalize_base_url(base_url),
        # The SDK types its http_client as its own httpx flavour; HA's is compatible.
        http_client=cast(Any, get_async_client(hass)),
    )
    # platform_headers() reads /proc and friends once and caches: keep it off the loop.
    await hass.async_add_executor_job(client.platform_headers)
    return client


async def async_list_models(client: openai.AsyncOpenAI) -> list[str]:
    """Return the model IDs the service offers, proving the URL and key work.

    Some compatible services do not implement `/models`; a 404 still proves the
    server answered and accepted the key, so it counts as success with no list.
    """
    try:
        # No retries: a person is waiting on the form, and setup retries by itself.
        page = await client.with_options(max_retries=0).models.list(
            timeout=VALIDATION_TIMEOUT
        )
    except openai.NotFoundError:
        return []
    return sorted(model.id for model in page.data)
