"""The camera: a robot takes a photo, posts it like the firmware, a model answers.

The simulated Otto robot with a camera (simulator/device.py's SimCamera: the
firmware's chunked multipart POST with a real JPEG) posts to Home Assistant's
real HTTP server; the fake provider checks that the chat request carries that
very JPEG as a valid data URL.
"""

import json
from typing import Any

from aiohttp import BodyPartReader, ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    MockPlatform,
    mock_config_flow,
    mock_integration,
    mock_platform,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from homeassistant.components import ai_task, conversation, image
from homeassistant.components.assist_pipeline import (
    Pipeline,
    async_create_default_pipeline,
    async_get_pipelines,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.config_entries import ConfigEntry, ConfigFlow
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er, llm
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import (
    CONF_VISION_MODEL,
    DEVICE_TOOLS_API_ID,
    DOMAIN,
    OTA_PATH,
    SUBENTRY_CONVERSATION,
    VISION_PATH,
)
from custom_components.xiaozhi.device.camera import last_photo_unique_id, vision_token
from custom_components.xiaozhi.device.entity import pipeline_select_unique_id
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.diagnostics import async_get_config_entry_diagnostics
from custom_components.xiaozhi.photo_answers import NO_VISION_MODEL
from custom_components.xiaozhi.server.vision import MAX_PHOTO_BYTES
from fake_provider import CHAT_PATH, ChatReply, FakeProvider
from simulator.board import OttoBoard
from simulator.device import (
    CAMERA_BOUNDARY,
    CAMERA_NOT_SET,
    DEFAULT_CLIENT_ID,
    SimCamera,
    SimulatedDevice,
)
from tests.helpers.devices import (
    MAC,
    TOKEN,
    DeviceFactory,
    registry_device_id,
    wait_until,
)
from tests.helpers.photos import jpeg_photo, use_test_server_url
from tests.helpers.voice import (
    AGENT_ENTITY,
    STT_ENTITY,
    TTS_ENTITY,
    answer_messages,
    chat_messages,
    say,
    sentences,
)

PHOTO = "xiaozhi-device__self_camera_take_photo"
QUESTION = "这是什么东西？"
SEEN = "一个红色的方块。"

type Client = TestClient[web.Request, web.Application]


async def device_tools(hass: HomeAssistant) -> llm.APIInstance:
    return await llm.async_get_api(
        hass,
        DEVICE_TOOLS_API_ID,
        llm.LLMContext(DOMAIN, None, "zh", "conversation", registry_device_id(hass)),
    )


async def take_photo(hass: HomeAssistant, question: str = QUESTION) -> llm.ToolResult:
    instance = await device_tools(hass)
    return await instance.async_call_tool(
        llm.ToolInput("self_camera_take_photo", {"question": question})
    )


def image_entity(hass: HomeAssistant) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        Platform.IMAGE, DOMAIN, last_photo_unique_id(MAC)
    )
    assert entity_id is not None
    return entity_id


@pytest.fixture
def camera(photo: bytes) -> SimCamera:
    return SimCamera(photo)


@pytest.fixture
async def robot(
    ha_core: HomeAssistant,
    client: Client,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    camera: SimCamera,
) -> SimulatedDevice:
    """The Otto robot with a camera, connected to the test server's Home Assistant."""
    await use_test_server_url(ha_core, str(client.make_url("/")))
    device = devices(tools=OttoBoard().tools(), camera=camera)
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    return device


# ---------------------------------------------------------------- the whole way


async def test_what_the_robot_sees_is_answered_by_the_agents_model(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    robot: SimulatedDevice,
    camera: SimCamera,
    photo: bytes,
    hass_client: ClientSessionGenerator,
) -> None:
    """The agent asks the camera; its chat model sees the photo (no model for photos)."""
    fake_provider.add_transcript("这是什么？")
    fake_provider.add_reply(
        ChatReply.tool_call(PHOTO, {"question": QUESTION}, text="我看看。"),
        ChatReply.text(SEEN),  # the chat model, asked about the photo
        ChatReply.text("我看到一个红色的方块。"),
    )

    await say(robot)
    messages = await answer_messages(robot)

    assert sentences(messages) == ["我看看。", "我看到一个红色的方块。"]
    assert camera.questions == [QUESTION]
    # The device got the answer as readable UTF-8 JSON (it passes it on as is).
    assert camera.answers == [f'{{"success":true,"answer":"{SEEN}"}}']
    # The model got the very JPEG, as a valid image data URL, with the question.
    [image] = fake_provider.images
    assert (image.mime_type, image.data) == ("image/jpeg", photo)
    vision = fake_provider.chat_requests[1]
    assert vision["model"] == fake_provider.chat_requests[0]["model"]
    assert not vision.get("stream")
    assert vision["messages"][1]["content"][0] == {"type": "text", "text": QUESTION}
    # The agent's next round has the answer as the tool's result.
    [result] = [m for m in chat_messages(fake_provider, 2) if m["role"] == "tool"]
    assert json.loads(result["content"]) == {
        "data": {"result": {"success": True, "answer": SEEN}},
        "error": False,
    }

    # The photo is the device's image entity's, served by Home Assistant.
    state = ha_core.states.get(image_entity(ha_core))
    assert state is not None
    assert state.state not in ("unknown", "unavailable")
    http = await hass_client()
    response = await http.get(f"/api/image_proxy/{image_entity(ha_core)}")
    assert response.status == 200
    assert response.content_type == "image/jpeg"
    assert await response.read() == photo


async def test_the_agents_model_for_photos_answers_when_it_has_one(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    provider_entry: MockConfigEntry,
    pipeline: Pipeline,
    robot: SimulatedDevice,
) -> None:
    subentry = next(
        s
        for s in provider_entry.subentries.values()
        if s.subentry_type == SUBENTRY_CONVERSATION
    )
    ha_core.config_entries.async_update_subentry(
        provider_entry,
        subentry,
        data={**subentry.data, CONF_VISION_MODEL: "qwen-vl-max"},
    )
    await ha_core.async_block_till_done()
    fake_provider.add_reply(ChatReply.text(SEEN))

    result = await take_photo(ha_core)

    assert result.data == {"result": {"success": True, "answer": SEEN}}
    assert fake_provider.chat_requests[-1]["model"] == "qwen-vl-max"


async def test_without_a_model_that_sees_the_assistant_hears_why(
    ha_core: HomeAssistant,
    robot: SimulatedDevice,
    fake_provider: FakeProvider,
    device_entry: MockConfigEntry,
    photo: bytes,
) -> None:
    """The preferred pipeline's agent is Home Assistant's own, and no AI task."""
    result = await take_photo(ha_core)

    assert result.data == {"result": {"success": False, "message": NO_VISION_MODEL}}
    assert fake_provider.chat_requests == []
    # The photo is kept all the same; diagnostics say when and how big, no more.
    state = ha_core.states.get(image_entity(ha_core))
    assert state is not None
    diagnostics = await async_get_config_entry_diagnostics(ha_core, device_entry)
    assert diagnostics["device"]["last_photo"] == {
        "taken_at": state.state,
        "bytes": len(photo),
    }


async def test_the_devices_own_pipeline_picks_who_answers(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    provider_entry: MockConfigEntry,
    robot: SimulatedDevice,
) -> None:
    """The preferred pipeline is HA's own; the device's select picks ours."""
    # The service made its pipeline the preferred one; the user went back to HA's.
    store = ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store
    store.async_set_preferred_item(
        next(p.id for p in async_get_pipelines(ha_core) if p.name == "Home Assistant")
    )
    ours = await async_create_default_pipeline(
        ha_core, STT_ENTITY, TTS_ENTITY, "Xiaozhi"
    )
    assert ours is not None
    await async_update_pipeline(ha_core, ours, conversation_engine=AGENT_ENTITY)
    assert (await take_photo(ha_core)).data["result"] == {
        "success": False,
        "message": NO_VISION_MODEL,
    }

    select = er.async_get(ha_core).async_get_entity_id(
        Platform.SELECT, DOMAIN, pipeline_select_unique_id(MAC)
    )
    await ha_core.services.async_call(
        Platform.SELECT,
        "select_option",
        {"entity_id": select, "option": "Xiaozhi"},
        blocking=True,
    )
    fake_provider.add_reply(ChatReply.text(SEEN))

    result = await take_photo(ha_core)

    assert result.data == {"result": {"success": True, "answer": SEEN}}


async def test_a_failing_vision_model_is_reported_to_the_assistant(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    robot: SimulatedDevice,
) -> None:
    fake_provider.fail_next(CHAT_PATH, 400, "model does not support images")

    result = await take_photo(ha_core)

    answer = result.data["result"]
    assert isinstance(answer, dict)
    assert answer["success"] is False
    assert "model does not support images" in str(answer["message"])


async def test_a_vision_model_that_says_nothing_is_reported(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    robot: SimulatedDevice,
) -> None:
    fake_provider.add_reply(ChatReply.text("  "))

    result = await take_photo(ha_core)

    answer = result.data["result"]
    assert isinstance(answer, dict)
    assert answer == {
        "success": False,
        "message": f"The vision model {fake_provider.chat_requests[0]['model']}"
        " gave no answer",
    }


async def test_without_a_url_of_its_own_the_camera_cannot_send(
    ha_core: HomeAssistant,
    client: Client,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    camera: SimCamera,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The device is told no endpoint; its camera says so, the model hears it."""
    # No internal or external URL, and no HTTP API address to build one from.
    ha_core.config.api = None
    device = devices(tools=OttoBoard().tools(), camera=camera)
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    assert (device.vision_url, device.vision_token) == ("", "")

    with pytest.raises(HomeAssistantError, match=CAMERA_NOT_SET):
        await take_photo(ha_core)
    assert "has no URL of its own" in caplog.text


async def test_the_device_is_told_the_endpoint_and_its_own_token(
    robot: SimulatedDevice, client: Client
) -> None:
    assert robot.vision_url == str(client.make_url(VISION_PATH))
    assert robot.vision_token == vision_token(TOKEN)
    assert robot.vision_token != TOKEN


# ---------------------------------------------------------------- AI task


class PhotoTestFlow(ConfigFlow):
    """The test integration's (unused) config flow."""

    VERSION = 1


class PhotoTask(ai_task.AITaskEntity):
    """An AI task entity that sees attachments and says what it got."""

    _attr_name = "Photo task"

    def __init__(self, features: ai_task.AITaskEntityFeature) -> None:
        self._attr_supported_features = features
        self.seen: list[bytes] = []
        self.instructions: list[str] = []

    async def _async_generate_data(
        self, task: ai_task.GenDataTask, chat_log: conversation.ChatLog
    ) -> ai_task.GenDataTaskResult:
        for attachment in task.attachments or []:
            self.seen.append(
                await self.hass.async_add_executor_job(attachment.path.read_bytes)
            )
        self.instructions.append(task.instructions)
        return ai_task.GenDataTaskResult(
            conversation_id=chat_log.conversation_id, data="A red square."
        )


PHOTO_TASK = "ai_task.photo_task"


SEES = (
    ai_task.AITaskEntityFeature.GENERATE_DATA
    | ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS
)


@pytest.fixture
def task_features() -> ai_task.AITaskEntityFeature:
    return SEES


@pytest.fixture
async def photo_task(
    ha_core: HomeAssistant,
    hass_storage: dict[str, Any],
    task_features: ai_task.AITaskEntityFeature,
) -> PhotoTask:
    """An AI task entity of a test integration, the preferred one (as stored by HA)."""
    entity = PhotoTask(task_features)
    hass_storage[ai_task.DOMAIN] = {
        "version": 1,
        "data": {"gen_data_entity_id": PHOTO_TASK, "gen_image_entity_id": None},
    }

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        await hass.config_entries.async_forward_entry_setups(entry, [Platform.AI_TASK])
        return True

    async def setup_platform(
        hass: HomeAssistant,
        entry: ConfigEntry,
        async_add_entities: AddConfigEntryEntitiesCallback,
    ) -> None:
        async_add_entities([entity])

    mock_integration(ha_core, MockModule("photo_test", async_setup_entry=setup_entry))
    mock_platform(ha_core, "photo_test.config_flow")
    mock_platform(
        ha_core, "photo_test.ai_task", MockPlatform(async_setup_entry=setup_platform)
    )
    assert await async_setup_component(ha_core, ai_task.DOMAIN, {})
    entry = MockConfigEntry(domain="photo_test")
    entry.add_to_hass(ha_core)
    with mock_config_flow("photo_test", PhotoTestFlow):
        assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()
    assert entity.entity_id == PHOTO_TASK
    return entity


async def test_an_ai_task_answers_for_an_agent_that_is_not_ours(
    ha_core: HomeAssistant,
    photo_task: PhotoTask,  # set up first: HA's HTTP routes freeze with the server
    robot: SimulatedDevice,
    photo: bytes,
) -> None:
    """The photo reaches the preferred AI task entity through the image entity."""
    result = await take_photo(ha_core)

    assert result.data == {"result": {"success": True, "answer": "A red square."}}
    assert photo_task.seen == [photo]
    assert QUESTION in photo_task.instructions[0]


@pytest.mark.parametrize("task_features", [ai_task.AITaskEntityFeature.GENERATE_DATA])
async def test_an_ai_task_that_cannot_take_photos_is_not_asked(
    ha_core: HomeAssistant,
    photo_task: PhotoTask,
    robot: SimulatedDevice,
) -> None:
    result = await take_photo(ha_core)

    assert result.data == {"result": {"success": False, "message": NO_VISION_MODEL}}
    assert photo_task.instructions == []


@pytest.fixture
async def ai_tasks(ha_core: HomeAssistant) -> None:
    """HA's AI task integration, with no entity (set up before HA's server starts)."""
    assert await async_setup_component(ha_core, ai_task.DOMAIN, {})


@pytest.mark.usefixtures("ai_tasks")
async def test_ai_tasks_without_a_preferred_entity_leave_it_to_the_agents_model(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    robot: SimulatedDevice,
) -> None:
    """HA's default config loads AI tasks; none is preferred: our chat model sees."""
    assert ai_task.DOMAIN in ha_core.config.components
    fake_provider.add_reply(ChatReply.text(SEEN))

    result = await take_photo(ha_core)

    assert result.data == {"result": {"success": True, "answer": SEEN}}


# ---------------------------------------------------------------- refusals


def photo_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "Device-Id": MAC,
        "Client-Id": DEFAULT_CLIENT_ID,
        "Authorization": f"Bearer {vision_token(TOKEN)}",
        "Content-Type": f"multipart/form-data; boundary={CAMERA_BOUNDARY}",
    }
    return {**headers, **overrides}


def photo_body(jpeg: bytes, question: str = QUESTION, *, swap: bool = False) -> bytes:
    parts = [
        f'--{CAMERA_BOUNDARY}\r\nContent-Disposition: form-data; name="question"'
        f"\r\n\r\n{question}\r\n".encode(),
        f'--{CAMERA_BOUNDARY}\r\nContent-Disposition: form-data; name="file";'
        ' filename="camera.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + jpeg
        + b"\r\n",
    ]
    if swap:
        parts.reverse()
    return b"".join(parts) + f"--{CAMERA_BOUNDARY}--\r\n".encode()


async def post(client: Client, body: Any, headers: dict[str, str]) -> tuple[int, str]:
    response = await client.post(VISION_PATH, data=body, headers=headers)
    return response.status, await response.text()


async def test_only_the_paired_device_may_post(
    ha_core: HomeAssistant, client: Client, runtime: DeviceRuntime, photo: bytes
) -> None:
    with runtime.camera.photo_call():
        for headers in (
            photo_headers(Authorization=f"Bearer {TOKEN}"),  # the device token
            photo_headers(Authorization="Bearer wrong"),
            photo_headers(**{"Client-Id": "another-client"}),
            photo_headers(**{"Device-Id": "11:22:33:44:55:66"}),
            photo_headers(**{"Device-Id": "not a mac"}),
            {k: v for k, v in photo_headers().items() if k != "Authorization"},
        ):
            status, _ = await post(client, photo_body(photo), headers)
            assert status == 401
    assert runtime.camera.last_photo is None


async def test_a_photo_nobody_asked_for_is_refused(
    client: Client, runtime: DeviceRuntime, photo: bytes
) -> None:
    status, text = await post(client, photo_body(photo), photo_headers())

    assert status == 409
    assert "no photo was asked for" in text
    assert runtime.camera.last_photo is None


async def test_bodies_that_are_no_photo_are_refused(
    client: Client, runtime: DeviceRuntime, photo: bytes
) -> None:
    with runtime.camera.photo_call():
        cases = [
            (photo_body(b"GIF89a not a jpeg"), photo_headers(), 400),
            (photo_body(photo, swap=True), photo_headers(), 400),
            (b"question=x", photo_headers(**{"Content-Type": "text/plain"}), 400),
            (photo_body(photo, "问" * 1000), photo_headers(), 413),
            (b"--garbage", photo_headers(), 400),
        ]
        for body, headers, expected in cases:
            status, _ = await post(client, body, headers)
            assert status == expected
    assert runtime.camera.last_photo is None


async def test_an_oversized_photo_is_refused_streamed_or_announced(
    client: Client, runtime: DeviceRuntime, photo: bytes
) -> None:
    huge = photo + bytes(MAX_PHOTO_BYTES + 8192)

    async def chunked() -> Any:
        body = photo_body(huge)
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    with runtime.camera.photo_call():
        # Chunked, as the firmware sends: refused once the part grows too big.
        status, _ = await post(client, chunked(), photo_headers())
        assert status == 413
        # With a Content-Length over the limit: refused before reading.
        status, _ = await post(client, photo_body(huge), photo_headers())
        assert status == 413
    assert runtime.camera.last_photo is None


async def test_a_second_photo_replaces_the_first(
    ha_core: HomeAssistant,
    robot: SimulatedDevice,
    camera: SimCamera,
    photo: bytes,
    fake_provider: FakeProvider,
) -> None:
    await take_photo(ha_core)
    assert (
        await image.async_get_image(ha_core, image_entity(ha_core))
    ).content == photo
    camera.jpeg = jpeg_photo((20, 160, 40))

    await take_photo(ha_core, "还有什么？")

    served = await image.async_get_image(ha_core, image_entity(ha_core))
    assert served.content == camera.jpeg != photo
    assert served.content_type == "image/jpeg"
    assert not robot.closed


async def test_the_photo_endpoint_shares_the_device_request_budget(
    client: Client,
) -> None:
    """Floods through the photo endpoint use up the OTA endpoints' budget too."""
    for _ in range(1000):
        status, _ = await post(client, b"", photo_headers())
        if status == 429:
            break
    assert status == 429
    response = await client.get(OTA_PATH)
    assert response.status == 429


async def test_the_simulated_camera_posts_like_the_firmware(
    robot: SimulatedDevice,
) -> None:
    """Chunked, question first, camera.jpg: what esp32_camera.cc sends."""
    seen: list[tuple[web.Request, list[tuple[str | None, str | None]]]] = []

    async def record(request: web.Request) -> web.Response:
        reader = await request.multipart()
        parts = []
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            parts.append((part.name, part.filename))
            await part.read()
        seen.append((request, parts))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/explain", record)
    async with TestServer(app) as server, ClientSession() as http:
        robot.vision_url = str(server.make_url("/explain"))
        robot.http = http
        answer = await robot.upload_photo(b"\xff\xd8\xffjpeg", "question?")

    assert json.loads(answer) == {"ok": True}
    [(request, parts)] = seen
    assert request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in request.headers
    assert request.headers["Device-Id"] == MAC
    assert request.headers["Authorization"] == f"Bearer {vision_token(TOKEN)}"
    assert parts == [("question", None), ("file", "camera.jpg")]
