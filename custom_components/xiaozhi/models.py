"""Runtime data kept on config entries."""

from dataclasses import dataclass, field

import openai

from homeassistant.config_entries import ConfigEntry


@dataclass(slots=True)
class ProviderRuntime:
    """What a loaded provider entry holds: the client and what the service offers."""

    client: openai.AsyncOpenAI
    models: list[str] = field(default_factory=list)


type ProviderConfigEntry = ConfigEntry[ProviderRuntime]
