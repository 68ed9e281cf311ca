"""Tests of the demo's Home Assistant setup (demo/setup_ha.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
import json
import os
from pathlib import Path
import subprocess
import sys
from typing import Any

from aiohttp import web
import pytest

from demo.setup_ha import (
    DEMO_COUNTRY,
    DEMO_ENTRY_TITLE,
    DEMO_LIGHT_UNIQUE_ID,
    DEMO_LIGHT_YAML,
    DEMO_PIPELINE_NAME,
    DEMO_PIPELINES,
    DemoEngines,
    DemoSetupError,
    add_demo_light,
    demo_entry_id,
    engines_of,
    finish,
    main as setup_main,
    pipeline_fields,
)
from fake_provider.demo import CHAT_MODEL

ROOT = Path(__file__).parent.parent


def test_demo_light_is_added_once(tmp_path: Path) -> None:
    configuration = tmp_path / "configuration.yaml"
    configuration.write_text("frontend:\n", encoding="utf-8")
    assert add_demo_light(configuration)
    assert not add_demo_light(configuration)
    assert configuration.read_text(encoding="utf-8") == "frontend:\n" + DEMO_LIGHT_YAML


def test_engines_and_pipeline(tmp_path: Path) -> None:
    registry = [
        {"entity_id": "conversation.a", "config_entry_id": "e1"},
        {"entity_id": "stt.b", "config_entry_id": "e1"},
        {"entity_id": "tts.other", "config_entry_id": "e2"},
    ]
    assert engines_of(registry, "e1") is None
    registry.append({"entity_id": "tts.c", "config_entry_id": "e1"})
    engines = engines_of(registry, "e1")
    assert engines == DemoEngines("conversation.a", "stt.b", "tts.c")
    fields = pipeline_fields(engines, DEMO_PIPELINE_NAME, "zh-CN")
    assert fields["name"] == DEMO_PIPELINE_NAME
    assert (fields["stt_engine"], fields["stt_language"]) == ("stt.b", "zh-CN")
    assert fields["prefer_local_intents"] is True

    storage = tmp_path / ".storage"
    storage.mkdir()
    entries = [{"domain": "xiaozhi", "unique_id": "http://h/v1", "entry_id": "x1"}]
    (storage / "core.config_entries").write_text(
        json.dumps({"data": {"entries": entries}}), encoding="utf-8"
    )
    assert demo_entry_id(tmp_path, "http://h/v1/") == "x1"
    with pytest.raises(DemoSetupError):
        demo_entry_id(tmp_path, "http://other/v1")


def test_prepare_makes_an_onboarded_home_with_the_demo_entry(tmp_path: Path) -> None:
    """Runs the real step (as scripts/develop does) and reads what HA will load."""
    command = [sys.executable, "-m", "demo.setup_ha", "prepare", "--config"]
    command += [str(tmp_path), "--provider-url", "http://127.0.0.1:9/v1/"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    first = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert "created the owner 'demo'" in first.stderr
    again = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert "already prepared" in again.stderr

    def stored(key: str) -> Any:
        text = (tmp_path / ".storage" / key).read_text(encoding="utf-8")
        return json.loads(text)["data"]

    assert set(stored("onboarding")["done"]) == {
        "user",
        "core_config",
        "analytics",
        "integration",
    }
    (owner,) = stored("auth")["users"]
    assert owner["is_owner"]
    assert owner["group_ids"] == ["system-admin"]
    (login,) = stored("auth")["credentials"]
    assert (login["user_id"], login["data"]) == (owner["id"], {"username": "demo"})
    (entry,) = stored("core.config_entries")["entries"]
    assert entry["title"] == DEMO_ENTRY_TITLE
    assert entry["unique_id"] == "http://127.0.0.1:9/v1"
    assert entry["data"]["supports_audio"] is True
    kinds = {sub["subentry_type"]: sub["data"] for sub in entry["subentries"]}
    assert kinds["conversation"]["model"] == CHAT_MODEL
    assert kinds["conversation"]["llm_hass_api"] == ["assist", "xiaozhi_device"]
    assert set(kinds) == {"conversation", "stt", "tts"}
    assert "Demo light" in (tmp_path / "configuration.yaml").read_text("utf-8")


class FakeHomeAssistant:
    """The slice of HA's HTTP and WebSocket API that the finish step uses.

    Its login and its start; what the commands do in a real HA is proven by
    tests/test_demo_end_to_end.py.
    """

    def __init__(self) -> None:
        self.config: dict[str, Any] = {"state": "STARTING", "country": None}
        self.registry: list[dict[str, Any]] = []
        self.pipelines: list[dict[str, Any]] = []
        self.areas: list[dict[str, Any]] = []
        self.light: dict[str, Any] = {
            "entity_id": "light.demo_light",
            "platform": "template",
            "unique_id": DEMO_LIGHT_UNIQUE_ID,
            "area_id": None,
            "device_id": None,
        }
        self.preferred: str | None = None
        self.calls: list[dict[str, Any]] = []
        self.password = "demo1234"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/auth/providers", self.providers)
        app.router.add_post("/auth/login_flow", self.start_login)
        app.router.add_post("/auth/login_flow/{flow_id}", self.login)
        app.router.add_post("/auth/token", self.token)
        app.router.add_get("/api/websocket", self.websocket)
        return app

    async def providers(self, request: web.Request) -> web.Response:
        return web.json_response([{"type": "homeassistant"}])

    async def start_login(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert body["handler"] == ["homeassistant", None]
        return web.json_response({"flow_id": "f1", "type": "form"})

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        if (body["username"], body["password"]) != ("demo", self.password):
            return web.json_response({"type": "form", "errors": {"base": "bad"}})
        return web.json_response({"type": "create_entry", "result": "code1"})

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert (form["grant_type"], form["code"]) == ("authorization_code", "code1")
        return web.json_response({"access_token": "token1", "token_type": "Bearer"})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "auth_required"})
        auth = await ws.receive_json()
        if auth["access_token"] != "token1":
            await ws.send_json({"type": "auth_invalid"})
            return ws
        await ws.send_json({"type": "auth_ok"})
        async for message in ws:
            command = json.loads(message.data)
            self.calls.append(command)
            await ws.send_json({"type": "event", "id": 999, "event": {}})
            await ws.send_json(self.answer(command))
        return ws

    def answer(self, command: dict[str, Any]) -> dict[str, Any]:
        result: Any = None
        match command["type"]:
            case "get_config":
                result = dict(self.config)
                self.config["state"] = "RUNNING"  # started by the next call
            case "config/core/update":
                self.config["country"] = command["country"]
            case "config/entity_registry/list":
                result = list(self.registry)
                self.registry = [
                    {"entity_id": f"{domain}.demo", "config_entry_id": "e1"}
                    for domain in ("conversation", "stt", "tts")
                ] + [self.light]
            case "config/entity_registry/update":
                assert command["entity_id"] == self.light["entity_id"]
                self.light["area_id"] = command["area_id"]
            case "config/area_registry/list":
                result = list(self.areas)
            case "config/area_registry/create":
                result = {"area_id": "a1", "name": command["name"]}
                self.areas.append(result | {"aliases": command["aliases"]})
            case "assist_pipeline/pipeline/list":
                result = {
                    "pipelines": self.pipelines,
                    "preferred_pipeline": self.preferred,
                }
            case "assist_pipeline/pipeline/create":
                fields = {k: v for k, v in command.items() if k not in ("id", "type")}
                result = fields | {"id": f"p{len(self.pipelines) + 1}"}
                self.pipelines.append(result)
            case "assist_pipeline/pipeline/set_preferred":
                self.preferred = command["pipeline_id"]
            case _:
                return {
                    "id": command["id"],
                    "type": "result",
                    "success": False,
                    "error": {"code": "unknown_command"},
                }
        return {
            "id": command["id"],
            "type": "result",
            "success": True,
            "result": result,
        }


@pytest.fixture
async def fake_ha(socket_enabled: None) -> AsyncIterator[tuple[FakeHomeAssistant, str]]:
    fake = FakeHomeAssistant()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_finish_makes_the_demo_pipeline_once(
    fake_ha: tuple[FakeHomeAssistant, str],
) -> None:
    fake, url = fake_ha
    done = await finish(url, "e1")
    assert len(done) == 5
    assert fake.config["country"] == DEMO_COUNTRY
    assert [p["name"] for p in fake.pipelines] == [n for n, _ in DEMO_PIPELINES]
    for pipeline in fake.pipelines:
        assert (pipeline["conversation_engine"], pipeline["tts_engine"]) == (
            "conversation.demo",
            "tts.demo",
        )
        assert pipeline["prefer_local_intents"] is True
    assert fake.preferred == "p1"
    assert fake.light["area_id"] == "a1"
    assert await finish(url, "e1") == []
    assert len(fake.pipelines) == 2


async def test_finish_reports_what_ha_refuses(
    fake_ha: tuple[FakeHomeAssistant, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = fake_ha
    monkeypatch.setattr(
        fake,
        "answer",
        lambda command: {
            "id": command["id"],
            "type": "result",
            "success": False,
            "error": "no",
        },
    )
    with pytest.raises(DemoSetupError, match="get_config failed"):
        await finish(url, "e1")
    fake.password = "changed by someone"
    with pytest.raises(DemoSetupError, match="login refused"):
        await finish(url, "e1")


def test_waiting_gives_up(socket_enabled: None) -> None:
    assert setup_main(["wait", "http://127.0.0.1:9/", "--timeout", "0.3"]) == 1
