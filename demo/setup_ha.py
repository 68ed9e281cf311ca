"""Prepare a Home Assistant config dir for the demo, and finish it once HA runs.

``scripts/develop --demo`` calls, from the repository root:

``python -m demo.setup_ha prepare --config DIR --provider-url URL``
    Before Home Assistant starts, with Home Assistant's own classes (as
    ``hass --script auth`` does): the demo owner (``demo`` / ``demo1234``),
    onboarding marked done, the Xiaozhi provider entry for the demo provider with
    the subentries the config flow gives a new entry, and the demo light in
    ``configuration.yaml``. Safe to run again: what exists is kept.

``python -m demo.setup_ha wait URL``
    Waits until an HTTP server answers at URL (the demo provider).

``python -m demo.setup_ha finish --config DIR --ha-url URL --provider-url URL``
    Once Home Assistant runs: logs in as the demo user through HA's login flow
    and, over the WebSocket API, sets the home's country (as onboarding would)
    puts the demo light in the area "Living room" (alias 客厅), and makes two
    Assist pipelines of the demo's conversation agent, speech-to-text and
    text-to-speech, Chinese (preferred) and English, both preferring Home
    Assistant's local intents: "打开客厅灯" / "turn on the living room light" is
    handled by Home Assistant itself and never waits for the language model;
    anything else goes to the demo provider's agent.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
import itertools
import json
import logging
from pathlib import Path
import sys
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from fake_provider.demo import DEFAULT_PORT, DEMO_LIGHT_NAME, MODELS

if TYPE_CHECKING:
    from homeassistant.core import HomeAssistant

LOGGER: Final = logging.getLogger("demo.setup_ha")

DEMO_USERNAME: Final = "demo"
DEMO_PASSWORD: Final = "demo1234"  # noqa: S105 - documented, local demo only
DEMO_USER_NAME: Final = "Demo"
DEMO_ENTRY_TITLE: Final = "DEMO provider (canned replies)"
# (name, language); the first is made preferred. The simulator speaks zh-CN
# by default; a device that speaks English gets the second on its device page.
DEMO_PIPELINES: Final = (
    ("Xiaozhi demo 中文", "zh-CN"),
    ("Xiaozhi demo English", "en"),
)
DEMO_PIPELINE_NAME: Final = DEMO_PIPELINES[0][0]
# The demo light's area: Home Assistant's local intents match "打开客厅灯" and
# "turn on the living room light" by the area's name and alias.
DEMO_AREA_NAME: Final = "Living room"
DEMO_AREA_ALIASES: Final = ("客厅",)
DEMO_LIGHT_UNIQUE_ID: Final = "xiaozhi_demo_light"
# Xiaozhi devices are mostly at home in China; any country keeps HA from nagging.
DEMO_COUNTRY: Final = "CN"
DEMO_LOCATION: Final = "Xiaozhi demo"
DEFAULT_PROVIDER_URL: Final = f"http://127.0.0.1:{DEFAULT_PORT}/v1"
DEFAULT_HA_URL: Final = "http://127.0.0.1:8123"

# Appended to configuration.yaml once; the marker says it is there.
LIGHT_MARKER: Final = "# xiaozhi-demo: demo light"
DEMO_LIGHT_YAML: Final = f"""
{LIGHT_MARKER} (a template light whose state lives in an input_boolean)
input_boolean:
  demo_light_power:
    name: Demo light power
    icon: mdi:power

template:
  - light:
      - name: {DEMO_LIGHT_NAME}
        unique_id: {DEMO_LIGHT_UNIQUE_ID}
        icon: mdi:lightbulb
        state: "{{{{ is_state('input_boolean.demo_light_power', 'on') }}}}"
        turn_on:
          - action: input_boolean.turn_on
            target:
              entity_id: input_boolean.demo_light_power
        turn_off:
          - action: input_boolean.turn_off
            target:
              entity_id: input_boolean.demo_light_power
"""


class DemoSetupError(RuntimeError):
    """Home Assistant did not let the demo finish its setup."""


# --------------------------------------------------------------------------
# Before Home Assistant starts
# --------------------------------------------------------------------------


def add_demo_light(configuration: Path) -> bool:
    """Append the demo light to ``configuration.yaml``; False if it is there."""
    text = configuration.read_text(encoding="utf-8") if configuration.exists() else ""
    if LIGHT_MARKER in text:
        return False
    configuration.write_text(text + DEMO_LIGHT_YAML, encoding="utf-8")
    return True


def provider_entry_data(provider_url: str) -> dict[str, Any]:
    """Return the data of the demo's provider entry, as the config flow makes it."""
    from homeassistant.const import CONF_API_KEY

    from custom_components.xiaozhi.const import (
        CONF_BASE_URL,
        CONF_ENTRY_KIND,
        CONF_PRESET,
        CONF_SUPPORTS_AUDIO,
        ENTRY_KIND_PROVIDER,
    )
    from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM

    return {
        CONF_ENTRY_KIND: ENTRY_KIND_PROVIDER,
        CONF_PRESET: PRESET_CUSTOM,
        CONF_BASE_URL: provider_url,
        CONF_API_KEY: None,
        CONF_SUPPORTS_AUDIO: True,
    }


async def ensure_owner(hass: HomeAssistant, username: str, password: str) -> bool:
    """Make the demo owner (admin) with this password; False if it existed."""
    from homeassistant.auth.const import GROUP_ID_ADMIN
    from homeassistant.auth.providers.homeassistant import HassAuthProvider, InvalidUser

    provider = hass.auth.auth_providers[0]
    assert isinstance(provider, HassAuthProvider)
    await provider.async_initialize()
    try:
        await provider.async_add_auth(username, password)
    except InvalidUser:
        # Exists: keep the account, but make the documented password work.
        await provider.async_change_password(username, password)
    credentials = await provider.async_get_or_create_credentials({"username": username})
    if not credentials.is_new:
        return False
    # As onboarding does: the first user made this way is the owner.
    user = await hass.auth.async_create_user(DEMO_USER_NAME, group_ids=[GROUP_ID_ADMIN])
    await hass.auth.async_link_user(user, credentials)
    return True


async def mark_onboarded(hass: HomeAssistant) -> bool:
    """Mark every onboarding step done; False if they all were."""
    from homeassistant.components.onboarding import (
        STORAGE_KEY,
        STORAGE_VERSION,
        OnboardingStorage,
    )
    from homeassistant.components.onboarding.const import STEPS

    store = OnboardingStorage(hass, STORAGE_VERSION, STORAGE_KEY, private=True)
    data = await store.async_load() or {"done": []}
    missing = [step for step in STEPS if step not in data["done"]]
    if not missing:
        return False
    await store.async_save({"done": [*data["done"], *missing]})
    return True


async def ensure_provider_entry(hass: HomeAssistant, provider_url: str) -> bool:
    """Add the Xiaozhi entry of the demo provider; False if it exists.

    The entry is the one the config flow would make for a custom service with
    audio at ``provider_url``, with the same default subentries.
    """
    from types import MappingProxyType

    from homeassistant.config_entries import SOURCE_USER, ConfigEntry, ConfigEntryStore

    from custom_components.xiaozhi.config_flow import (
        XiaozhiConfigFlow,
        default_subentries,
    )
    from custom_components.xiaozhi.const import DOMAIN
    from custom_components.xiaozhi.provider.client import normalize_base_url
    from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM

    base_url = normalize_base_url(provider_url)
    store = ConfigEntryStore(hass)
    stored = await store.async_load() or {"entries": []}
    if any(
        entry["domain"] == DOMAIN and entry.get("unique_id") == base_url
        for entry in stored["entries"]
    ):
        return False
    entry = ConfigEntry(
        data=provider_entry_data(base_url),
        discovery_keys=MappingProxyType({}),
        domain=DOMAIN,
        minor_version=XiaozhiConfigFlow.MINOR_VERSION,
        options={},
        source=SOURCE_USER,
        subentries_data=default_subentries(PRESET_CUSTOM, True, list(MODELS)),
        title=DEMO_ENTRY_TITLE,
        unique_id=base_url,
        version=XiaozhiConfigFlow.VERSION,
    )
    await store.async_save({"entries": [*stored["entries"], entry.as_dict()]})
    return True


async def prepare_storage(config_dir: Path, provider_url: str) -> list[str]:
    """Prepare HA's storage in ``config_dir``; return what was done, for the log."""
    from homeassistant.auth import auth_manager_from_config
    from homeassistant.config_entries import ConfigEntries
    from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers import device_registry as dr, entity_registry as er

    done = []
    hass = HomeAssistant(str(config_dir))
    try:
        if await ensure_provider_entry(hass, provider_url):
            done.append(f"added the Xiaozhi entry for {provider_url}")
        # What the auth store needs loaded, as in `hass --script auth`; loading
        # the config entries also proves that HA reads the one just written.
        hass.config_entries = ConfigEntries(hass, {})
        await hass.config_entries.async_initialize()
        dr.async_setup(hass)
        await asyncio.gather(dr.async_load(hass), er.async_load(hass))
        hass.auth = await auth_manager_from_config(
            hass, [{"type": "homeassistant"}], []
        )
        if await ensure_owner(hass, DEMO_USERNAME, DEMO_PASSWORD):
            done.append(f"created the owner '{DEMO_USERNAME}'")
        if await mark_onboarded(hass):
            done.append("marked onboarding done")
    finally:
        # Stores save with a delay and HA flushes them on this event when it
        # stops; this instance never ran, so async_stop() would do nothing.
        hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
        await hass.async_block_till_done()
    return done


def prepare(config_dir: Path, provider_url: str) -> list[str]:
    """Prepare ``config_dir`` for the demo; return what was done, for the log."""
    config_dir.mkdir(parents=True, exist_ok=True)
    done = []
    if add_demo_light(config_dir / "configuration.yaml"):
        done.append("added the demo light to configuration.yaml")
    return done + asyncio.run(prepare_storage(config_dir, provider_url))


# --------------------------------------------------------------------------
# Once Home Assistant runs
# --------------------------------------------------------------------------


async def wait_for_http(session: aiohttp.ClientSession, url: str) -> None:
    """Wait until something answers HTTP at ``url`` (any status)."""
    while True:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)):
                return
        except aiohttp.ClientError, TimeoutError:
            await asyncio.sleep(0.5)


async def login(
    session: aiohttp.ClientSession, ha_url: str, username: str, password: str
) -> str:
    """Log in through HA's login flow, as the frontend does; return an access token.

    Raises:
        DemoSetupError: The login was refused.
    """
    client_id = f"{ha_url}/"
    flow = await post_json(
        session,
        f"{ha_url}/auth/login_flow",
        {
            "client_id": client_id,
            "handler": ["homeassistant", None],
            "redirect_uri": client_id,
        },
    )
    result = await post_json(
        session,
        f"{ha_url}/auth/login_flow/{flow['flow_id']}",
        {"client_id": client_id, "username": username, "password": password},
    )
    if result.get("type") != "create_entry":
        raise DemoSetupError(f"login refused: {result.get('errors')}")
    async with session.post(
        f"{ha_url}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": result["result"],
            "client_id": client_id,
        },
    ) as response:
        tokens = await response.json()
    if "access_token" not in tokens:
        raise DemoSetupError(f"no token: {tokens}")
    return str(tokens["access_token"])


async def post_json(
    session: aiohttp.ClientSession, url: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    """POST JSON and return the JSON answer.

    Raises:
        DemoSetupError: The answer is not a JSON object.
    """
    async with session.post(url, json=body) as response:
        answer = await response.json(content_type=None)
    if not isinstance(answer, dict):
        raise DemoSetupError(f"{url} answered {response.status}: {answer!r}")
    return answer


class HaWebSocket:
    """A minimal client of Home Assistant's WebSocket API."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Wrap an open WebSocket."""
        self._ws = ws
        self._ids = itertools.count(1)

    async def authenticate(self, token: str) -> None:
        """Answer HA's ``auth_required``.

        Raises:
            DemoSetupError: HA refused the token.
        """
        await self._ws.receive_json()
        await self._ws.send_json({"type": "auth", "access_token": token})
        answer = await self._ws.receive_json()
        if answer.get("type") != "auth_ok":
            raise DemoSetupError(f"WebSocket auth failed: {answer}")

    async def call(self, command: str, **fields: Any) -> Any:
        """Send a command and return its result.

        Raises:
            DemoSetupError: HA answered with an error.
        """
        message_id = next(self._ids)
        await self._ws.send_json({"id": message_id, "type": command, **fields})
        while True:
            answer = await self._ws.receive_json()
            if answer.get("id") == message_id and answer.get("type") == "result":
                break
        if not answer.get("success"):
            raise DemoSetupError(f"{command} failed: {answer.get('error')}")
        return answer.get("result")


@dataclass(frozen=True, slots=True)
class DemoEngines:
    """The entity ids of the demo entry's conversation agent, STT and TTS."""

    conversation: str
    stt: str
    tts: str


def demo_entry_id(config_dir: Path, provider_url: str) -> str:
    """Return the id of the demo provider's entry, read from HA's storage.

    Raises:
        DemoSetupError: There is no such entry.
    """
    storage = config_dir / ".storage" / "core.config_entries"
    entries = json.loads(storage.read_text(encoding="utf-8"))["data"]["entries"]
    base_url = provider_url.strip().rstrip("/")  # as the integration stores it
    for entry in entries:
        if entry["domain"] == "xiaozhi" and entry.get("unique_id") == base_url:
            return str(entry["entry_id"])
    raise DemoSetupError(f"no Xiaozhi entry for {base_url} in {storage}")


def engines_of(
    registry: Sequence[Mapping[str, Any]], entry_id: str
) -> DemoEngines | None:
    """Return the entry's engines from the entity registry, once all exist."""
    found: dict[str, str] = {}
    for entity in registry:
        if entity.get("config_entry_id") == entry_id:
            domain = entity["entity_id"].partition(".")[0]
            found.setdefault(domain, entity["entity_id"])
    if not {"conversation", "stt", "tts"} <= found.keys():
        return None
    return DemoEngines(found["conversation"], found["stt"], found["tts"])


async def wait_for_engines(client: HaWebSocket, entry_id: str) -> DemoEngines:
    """Wait until the demo entry's three entities are registered."""
    while True:
        registry = await client.call("config/entity_registry/list")
        if (engines := engines_of(registry, entry_id)) is not None:
            return engines
        await asyncio.sleep(1)


def pipeline_fields(engines: DemoEngines, name: str, language: str) -> dict[str, Any]:
    """Return the settings of a demo Assist pipeline (local intents first)."""
    return {
        "name": name,
        "language": language,
        "conversation_engine": engines.conversation,
        "conversation_language": language,
        "stt_engine": engines.stt,
        "stt_language": language,
        "tts_engine": engines.tts,
        "tts_language": language,
        "tts_voice": None,
        "wake_word_entity": None,
        "wake_word_id": None,
        "prefer_local_intents": True,
    }


async def ensure_pipelines(client: HaWebSocket, engines: DemoEngines) -> list[str]:
    """Create the demo pipelines that are missing; return what was done.

    The first of `DEMO_PIPELINES` is made preferred when it is created; a
    pipeline that exists (by name) is left alone, as the user may have changed it.
    """
    existing = await client.call("assist_pipeline/pipeline/list")
    names = {p["name"] for p in existing["pipelines"]}
    done = []
    for index, (name, language) in enumerate(DEMO_PIPELINES):
        if name in names:
            continue
        created = await client.call(
            "assist_pipeline/pipeline/create",
            **pipeline_fields(engines, name, language),
        )
        if index == 0:
            await client.call(
                "assist_pipeline/pipeline/set_preferred", pipeline_id=created["id"]
            )
            done.append(f"created the preferred Assist pipeline '{name}' ({language})")
        else:
            done.append(f"created the Assist pipeline '{name}' ({language})")
    return done


def demo_light_of(registry: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Return the demo light's entry of the entity registry, once it is there."""
    for entity in registry:
        if (
            entity.get("platform") == "template"
            and entity.get("unique_id") == DEMO_LIGHT_UNIQUE_ID
        ):
            return entity
    return None


async def wait_for_demo_light(client: HaWebSocket) -> Mapping[str, Any]:
    """Wait until the demo light is registered; return its registry entry."""
    while True:
        registry = await client.call("config/entity_registry/list")
        if (light := demo_light_of(registry)) is not None:
            return light
        await asyncio.sleep(1)


async def ensure_area(client: HaWebSocket, light: Mapping[str, Any]) -> list[str]:
    """Put the demo light in the demo area (made if missing); return what was done.

    A light the user gave an area (or whose device has one) is left where it is.
    """
    done = []
    areas = await client.call("config/area_registry/list")
    wanted = DEMO_AREA_NAME.casefold()  # HA's area names are unique so
    area = next((a for a in areas if a["name"].casefold() == wanted), None)
    aliases = ", ".join(DEMO_AREA_ALIASES)
    if area is None:
        area = await client.call(
            "config/area_registry/create",
            name=DEMO_AREA_NAME,
            aliases=list(DEMO_AREA_ALIASES),
        )
        done.append(f"created the area '{DEMO_AREA_NAME}' (alias {aliases})")
    elif missing := [a for a in DEMO_AREA_ALIASES if a not in area["aliases"]]:
        area = await client.call(
            "config/area_registry/update",
            area_id=area["area_id"],
            aliases=[*area["aliases"], *missing],
        )
        done.append(f"gave the area '{area['name']}' the alias {aliases}")
    if light.get("area_id") is None and light.get("device_id") is None:
        await client.call(
            "config/entity_registry/update",
            entity_id=light["entity_id"],
            area_id=area["area_id"],
        )
        done.append(f"put {light['entity_id']} in the area '{DEMO_AREA_NAME}'")
    return done


async def configure(client: HaWebSocket, entry_id: str) -> list[str]:
    """Finish the demo over an authenticated WebSocket; return what was done."""
    await wait_until_running(client)
    done = []
    if await ensure_core_config(client):
        done.append(f"set the home's country ({DEMO_COUNTRY}) and name")
    done += await ensure_area(client, await wait_for_demo_light(client))
    done += await ensure_pipelines(client, await wait_for_engines(client, entry_id))
    return done


async def wait_until_running(client: HaWebSocket) -> None:
    """Wait until HA has started (every integration set up, its commands known)."""
    while True:
        config = await client.call("get_config")
        if config["state"] == "RUNNING":
            return
        await asyncio.sleep(0.5)


async def ensure_core_config(client: HaWebSocket) -> bool:
    """Set what onboarding's core config step would; False if it is set.

    Without a country HA raises a repair issue, which a demo should not show.
    """
    config = await client.call("get_config")
    if config.get("country"):
        return False
    await client.call(
        "config/core/update", country=DEMO_COUNTRY, location_name=DEMO_LOCATION
    )
    return True


async def finish(ha_url: str, entry_id: str) -> list[str]:
    """Finish the demo in a running HA; return what was done, for the log.

    Args:
        ha_url: Where HA listens.
        entry_id: The demo provider's config entry.
    """
    async with aiohttp.ClientSession() as session:
        # An endpoint without auth: probing /api/ would log a failed login.
        await wait_for_http(session, f"{ha_url}/auth/providers")
        token = await login(session, ha_url, DEMO_USERNAME, DEMO_PASSWORD)
        ws_url = ha_url.replace("http", "ws", 1) + "/api/websocket"
        async with session.ws_connect(ws_url) as ws:
            client = HaWebSocket(ws)
            await client.authenticate(token)
            return await configure(client, entry_id)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def report(done: Sequence[str], nothing: str) -> None:
    """Log what a step did."""
    for line in done or [nothing]:
        LOGGER.info("%s", line)


async def wait_for_url(url: str) -> None:
    """Wait for ``url`` to answer."""
    async with aiohttp.ClientSession() as session:
        await wait_for_http(session, url)


async def within[T](seconds: float, step: Coroutine[Any, Any, T]) -> T:
    """Run a step, failing with `DemoSetupError` after ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await step
    except TimeoutError:
        raise DemoSetupError(f"gave up after {seconds:g} s") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step from the command line; return the exit status."""
    parser = argparse.ArgumentParser(description="Set up the ha-xiaozhi demo.")
    steps = parser.add_subparsers(dest="step", required=True)
    step_prepare = steps.add_parser("prepare", help="before Home Assistant starts")
    step_prepare.add_argument("--config", type=Path, required=True)
    step_prepare.add_argument("--provider-url", default=DEFAULT_PROVIDER_URL)
    step_wait = steps.add_parser("wait", help="wait for an HTTP server")
    step_wait.add_argument("url")
    step_wait.add_argument("--timeout", type=float, default=30)
    step_finish = steps.add_parser("finish", help="once Home Assistant runs")
    step_finish.add_argument("--config", type=Path, required=True)
    step_finish.add_argument("--ha-url", default=DEFAULT_HA_URL)
    step_finish.add_argument("--provider-url", default=DEFAULT_PROVIDER_URL)
    step_finish.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    logging.basicConfig(format="[demo] %(message)s", level=logging.INFO)
    try:
        if args.step == "prepare":
            report(prepare(args.config, args.provider_url), "already prepared")
        elif args.step == "wait":
            asyncio.run(within(args.timeout, wait_for_url(args.url)))
        else:
            entry_id = demo_entry_id(args.config, args.provider_url)
            step = finish(args.ha_url, entry_id)
            report(
                asyncio.run(within(args.timeout, step)),
                "Home Assistant was already finished for the demo",
            )
    except DemoSetupError as err:
        LOGGER.error("setup failed: %s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
