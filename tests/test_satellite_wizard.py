"""HA's own "Voice Satellite setup" wizard, walked in a real browser, en and zh-Hans.

A real ``hass`` (fresh config dir, owner and onboarding made by
``demo/setup_ha.py``, the port in ``SETUP_PORT``) with this integration on the
local provider; headless Chromium logs in, pairs a device (the simulator's
check-in, code typed in HA's form) and walks the wizard HA opens after pairing:

1. Update: the device has no update entity, skipped by the wizard.
2. Check: HA's connection test, an announcement made while the just-paired
   device is not connected yet. It waits; the device connects ("press the
   button"), plays HA's test sound, and the check passes.
3. Wake word: the firmware's own wake word is not configurable, skipped.
4. Area: skipped with the wizard's "Skip".
5. Pipeline: HA offers only Cloud or Wyoming add-ons here (frontend
   20260930.5: ``ha-voice-assistant-setup-step-pipeline``/``-local``), so the
   wizard goes no further for any other pipeline; the device already uses the
   preferred pipeline the integration made, which the test checks.

Slow (a real HA and a browser, about 40 s per language) but part of the suite.
Screenshots go to the test's folder; with ``XIAOZHI_SCREENSHOTS=1`` also to
docs/images/ (the README shows them).
"""

import asyncio
from collections.abc import AsyncIterator
import contextlib
import os
from pathlib import Path
import shutil
import socket
import subprocess
from typing import Any, Final

import aiohttp
import pytest

from demo import setup_ha
from fake_provider import FakeProvider
from simulator.checkin import Activation, OtaClient, obtain_websocket, ota_url
from simulator.device import SimulatedDevice
from simulator.state import DeviceState

ROOT: Final = Path(__file__).resolve().parents[1]
CHROMIUM: Final = shutil.which("chromium") or shutil.which("chromium-browser")
IMAGES: Final = ROOT / "docs" / "images"
STEP_TIMEOUT_MS: Final = 40_000

# What the user clicks, by the UI language (HA's own translations).
ADD: Final = {"en": "Add", "zh-Hans": "添加"}
DEVICE_LANGUAGE: Final = {"en": "en-US", "zh-Hans": "zh-CN"}

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (scripts/bootstrap installs it with apt as root)",
    ),
    pytest.mark.timeout(150),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def write_config(config: Path, url: str) -> None:
    """A fresh config dir: the integration linked in, HA's UI, nothing else."""
    (config / "custom_components").mkdir(parents=True)
    (config / "custom_components" / "xiaozhi").symlink_to(
        ROOT / "custom_components" / "xiaozhi"
    )
    # The port comes from SETUP_PORT: a YAML server_port is a trial in 2026.10.
    (config / "configuration.yaml").write_text(
        f"""homeassistant:
  internal_url: "{url}"
assist_pipeline:
config:
conversation:
frontend:
logger:
  default: warning
  logs:
    custom_components.xiaozhi: info
""",
        encoding="utf-8",
    )


@contextlib.asynccontextmanager
async def real_hass(config: Path, provider: FakeProvider) -> AsyncIterator[str]:
    """Run ``hass`` on a fresh config dir until the context ends; yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(write_config, config, url)
    # As scripts/develop does, in its own interpreter (the test harness patches
    # HA's password hashing).
    prepare = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "python"),
        *("-m", "demo.setup_ha", "prepare", "--config", str(config)),
        *("--provider-url", provider.base_url),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    assert await prepare.wait() == 0
    log = await asyncio.to_thread((config / "hass.log").open, "wb")
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "hass"),
        *("-c", str(config), "--skip-pip"),
        env={**os.environ, "SETUP_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(60):
                await setup_ha.wait_for_http(http, f"{url}/auth/providers")
                token = await setup_ha.login(
                    http, url, setup_ha.DEMO_USERNAME, setup_ha.DEMO_PASSWORD
                )
                async with http.ws_connect(f"ws{url[4:]}/api/websocket") as ws:
                    client = setup_ha.HaWebSocket(ws)
                    await client.authenticate(token)
                    await setup_ha.wait_until_running(client)
        yield url
    finally:
        process.terminate()
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        log.close()


async def preferred_pipeline(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        token = await setup_ha.login(
            http, url, setup_ha.DEMO_USERNAME, setup_ha.DEMO_PASSWORD
        )
        async with http.ws_connect(f"ws{url[4:]}/api/websocket") as ws:
            client = setup_ha.HaWebSocket(ws)
            await client.authenticate(token)
            listing = await client.call("assist_pipeline/pipeline/list")
    pipelines: list[dict[str, Any]] = listing["pipelines"]
    return next(p for p in pipelines if p["id"] == listing["preferred_pipeline"])


@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_the_satellite_wizard_passes_after_pairing(
    socket_enabled: None, tmp_path: Path, language: str
) -> None:
    from playwright.async_api import Page, async_playwright

    shots: list[Path] = []

    async def shot(page: Page, name: str) -> None:
        path = tmp_path / f"wizard-{language}-{name}.png"
        await page.screenshot(path=str(path))
        shots.append(path)

    async with (
        FakeProvider.for_demo() as provider,
        real_hass(tmp_path / "config", provider) as url,
        aiohttp.ClientSession() as http,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        context = await browser.new_context(
            viewport={"width": 1100, "height": 800}, locale=language
        )
        await context.add_init_script(
            f"localStorage.setItem('selectedLanguage', '\"{language}\"')"
        )
        page = await context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        device: SimulatedDevice | None = None
        pairing: asyncio.Task[Any] | None = None
        try:
            # Log in as the owner the demo setup made.
            await page.goto(f"{url}/")
            await page.locator("input[name=username]").fill(setup_ha.DEMO_USERNAME)
            await page.locator("input[name=password]").fill(setup_ha.DEMO_PASSWORD)
            await page.keyboard.press("Enter")
            await page.wait_for_url("**/home/**")

            # The device checks in and speaks its code; HA shows it discovered.
            state = DeviceState.new()
            codes: asyncio.Queue[str] = asyncio.Queue()

            async def show_code(activation: Activation) -> None:
                await codes.put(activation.code)

            ota = OtaClient(http, ota_url(url), state, DEVICE_LANGUAGE[language])
            pairing = asyncio.create_task(obtain_websocket(ota, show_code))
            async with asyncio.timeout(20):
                code = await codes.get()

            # Settings > Devices & services > Xiaozhi: Add, type the code.
            await page.goto(f"{url}/config/integrations/integration/xiaozhi")
            await page.get_by_role("button", name=ADD[language], exact=True).click()
            await page.locator("input[name=code]").fill(code)
            await page.keyboard.press("Enter")

            # HA opens its wizard; its connection test waits for the device.
            await page.locator("ha-voice-assistant-setup-step-check").wait_for()
            await shot(page, "check")
            async with asyncio.timeout(30):
                settings = await pairing
            device = SimulatedDevice(
                http,
                settings.url,
                token=settings.token,
                mac=state.mac,
                client_id=state.client_id,
            )
            await device.open()  # the user pressed its button

            # The check passed (HA's sound was played), the wake word step
            # skipped itself: the area step.
            await page.locator("ha-voice-assistant-setup-step-area").wait_for()
            assert "tts" in device.received_types
            assert device.received_audio
            await shot(page, "passed")
            await page.locator("ha-dialog .skip-btn").click()
            await page.locator("ha-voice-assistant-setup-step-pipeline").wait_for()
            await page.get_by_role("button").last.wait_for()
            await shot(page, "pipeline")
            failed = page.locator("text=unable to connect")
            assert await failed.count() == 0
        finally:
            if pairing is not None:
                pairing.cancel()
                await asyncio.wait({pairing})
            if device is not None:
                await device.close()
            await browser.close()
        # The device needs no choice here: the preferred pipeline talks.
        pipeline = await preferred_pipeline(url)
        assert pipeline["stt_engine"] == "stt.xiaozhi_stt"
        assert pipeline["tts_engine"] == "tts.xiaozhi_tts"
        assert pipeline["conversation_engine"] == "conversation.xiaozhi_conversation"

    log = (tmp_path / "config" / "hass.log").read_text(encoding="utf-8")
    assert "never retrieved" not in log
    assert "Created the Assist pipeline" in log
    if os.environ.get("XIAOZHI_SCREENSHOTS"):
        for path in shots:
            shutil.copy(path, IMAGES / path.name)
