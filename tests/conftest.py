"""Fixtures of the whole suite; the shared ones live in tests/helpers/."""

from pathlib import Path

import pytest

from homeassistant.components import tts

# Imported at module import time so HA resolves `custom_components` to this repo's folder.
import custom_components.xiaozhi  # noqa: F401
from custom_components.xiaozhi.transport import mqtt
from tests.helpers.devices import client, device_entry, devices, runtime  # noqa: F401
from tests.helpers.home import ha_core, lights  # noqa: F401
from tests.helpers.links import lasting_link, make_link  # noqa: F401
from tests.helpers.mqtt import mqtt_devices, mqtt_endpoint, mqtt_entry  # noqa: F401
from tests.helpers.photos import photo  # noqa: F401
from tests.helpers.providers import fake_provider, provider_entry, provider_subentries  # noqa: F401
from tests.helpers.voice import pipeline  # noqa: F401


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let HA load this repo's integration in every test."""


@pytest.fixture(autouse=True)
def isolated_tts_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep HA's TTS file cache per test (its default lies in the shared test config)."""
    monkeypatch.setattr(tts, "DEFAULT_CACHE_DIR", str(tmp_path / "tts"))


@pytest.fixture(autouse=True)
def mqtt_endpoint_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the MQTT endpoint's sockets closed unless a test asks for them.

    Tests run with sockets blocked; the ``mqtt_endpoint`` fixture opens the
    endpoint on free local ports.
    """
    monkeypatch.setattr(mqtt, "DEFAULT_SETTINGS", mqtt.MqttSettings(enabled=False))
