"""The LLM API "Xiaozhi device": a connected robot's MCP tools for any agent.

The device is the simulated Otto robot (simulator/board.py: the firmware's tool
names and schemas) over a real WebSocket with MCP; the API is Home Assistant's
own (``llm.async_get_api``), merged with Assist as agents get it.
"""

import asyncio
from typing import Any

import probatio
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.components.number import DOMAIN as NUMBER_DOMAIN
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er, llm

from custom_components.xiaozhi.const import DEVICE_TOOLS_API_ID, DOMAIN
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.tools_api import (
    PROMPT_NOT_A_DEVICE,
    DeviceToolsAPI,
    device_entry_of,
)
from custom_components.xiaozhi.provider.chat_stream import format_tool
from fake_provider import ChatReply, FakeProvider
from simulator.board import OttoBoard
from simulator.device import SimTool, SimulatedDevice, ToolCallError
from tests.helpers.devices import MAC, DeviceFactory, registry_device_id, wait_until
from tests.helpers.translations import message
from tests.helpers.voice import answer_messages, chat_messages, say, sentences, until

NAMESPACE = "xiaozhi-device__"
ACTION = f"{NAMESPACE}self_otto_action"
VOLUME = f"{NAMESPACE}self_audio_speaker_set_volume"


def context(hass: HomeAssistant, device: str | None) -> llm.LLMContext:
    return llm.LLMContext(
        platform=DOMAIN,
        context=Context(),
        language="zh",
        assistant="conversation",
        device_id=device,
    )


async def merged_api(hass: HomeAssistant, device: str | None) -> llm.APIInstance:
    """What an agent with Assist and our API gets, as every agent asks for it."""
    return await llm.async_get_api(
        hass, [llm.LLM_API_ASSIST, DEVICE_TOOLS_API_ID], context(hass, device)
    )


def our_api(hass: HomeAssistant) -> DeviceToolsAPI:
    [api] = [api for api in llm.async_get_apis(hass) if api.id == DEVICE_TOOLS_API_ID]
    assert isinstance(api, DeviceToolsAPI)
    return api


def tool_named(instance: llm.APIInstance, name: str) -> llm.Tool:
    [tool] = [tool for tool in instance.tools if tool.name == name]
    return tool


async def call(
    instance: llm.APIInstance, name: str, **arguments: Any
) -> llm.ToolResult:
    return await instance.async_call_tool(llm.ToolInput(name, arguments))


@pytest.fixture
def board() -> OttoBoard:
    return OttoBoard()


@pytest.fixture
async def robot(
    runtime: DeviceRuntime, devices: DeviceFactory, board: OttoBoard
) -> SimulatedDevice:
    """The Otto robot, connected, its tools listed."""
    device = devices(tools=board.tools())
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    return device


# ---------------------------------------------------------------- what is offered


@pytest.mark.usefixtures("robot")
async def test_a_robots_tools_are_offered_next_to_assists(
    ha_core: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    instance = await merged_api(ha_core, registry_device_id(ha_core))
    # The device is found by its one config entry, not by HA's deprecated set.
    assert "deprecated" not in caplog.text

    ours = [tool for tool in instance.tools if tool.name.startswith(NAMESPACE)]
    assert {tool.name for tool in ours} == {
        f"{NAMESPACE}{name}"
        for name in (
            "self_get_device_status",
            "self_audio_speaker_set_volume",
            "self_screen_set_brightness",
            "self_screen_set_theme",
            "self_otto_action",
            "self_otto_servo_sequences",
            "self_otto_stop",
            "self_otto_set_trim",
            "self_otto_get_trims",
            "self_otto_get_status",
            "self_battery_get_level",
            "self_otto_get_ip",
        )
    }
    assert any(tool.name.startswith("assist__") for tool in instance.tools)
    # Who the tools are for, and the description's tail that did not fit.
    assert 'Xiaozhi device "Kitchen speaker"' in instance.api_prompt
    assert "More about the tool self_otto_servo_sequences:" in instance.api_prompt
    status = tool_named(instance, f"{NAMESPACE}self_get_device_status")
    assert status.annotations.read_only
    assert not tool_named(instance, ACTION).annotations.read_only
    assert all(tool.integration == DOMAIN for tool in ours)


@pytest.mark.usefixtures("robot")
async def test_agents_render_the_device_schemas_faithfully(
    ha_core: HomeAssistant,
) -> None:
    """As OpenAI's and Ollama's agents render them, and as ours does."""
    instance = await merged_api(ha_core, registry_device_id(ha_core))
    action = tool_named(instance, ACTION)

    for serializer in (instance.custom_serializer, None):
        schema = probatio.to_openapi(
            action.parameters, custom_serializer=serializer, openapi_version="3.1.0"
        )
        assert schema["properties"]["speed"] == {
            "type": "integer",
            "minimum": 100,
            "maximum": 3000,
            "default": 700,
        }
    function = format_tool(tool_named(instance, VOLUME), instance.custom_serializer)[
        "function"
    ]
    assert function["name"] == VOLUME
    assert function.get("parameters") == {
        "type": "object",
        "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["volume"],
        "additionalProperties": False,
    }
    assert "self_get_device_status" in function.get("description", "")


@pytest.mark.usefixtures("robot")
async def test_other_conversations_get_no_device_tools(ha_core: HomeAssistant) -> None:
    """Typed in the UI, or from a device of another integration."""
    typed = await llm.async_get_api(
        ha_core, DEVICE_TOOLS_API_ID, context(ha_core, None)
    )
    assert typed.tools == []
    assert typed.api_prompt == PROMPT_NOT_A_DEVICE

    other_entry = MockConfigEntry(domain="other")
    other_entry.add_to_hass(ha_core)
    other = dr.async_get(ha_core).async_get_or_create(
        config_entry_id=other_entry.entry_id, identifiers={("other", "speaker")}
    )
    elsewhere = await llm.async_get_api(
        ha_core, DEVICE_TOOLS_API_ID, context(ha_core, other.id)
    )
    assert elsewhere.tools == []
    assert device_entry_of(ha_core, "no-such-device") is None


async def test_a_device_that_is_not_connected_says_so(
    ha_core: HomeAssistant, runtime: DeviceRuntime
) -> None:
    instance = await llm.async_get_api(
        ha_core, DEVICE_TOOLS_API_ID, context(ha_core, registry_device_id(ha_core))
    )

    assert instance.tools == []
    assert "is not connected now" in instance.api_prompt
    assert runtime.link is None


# ---------------------------------------------------------------- calls


async def test_a_call_reaches_the_device_with_the_models_arguments(
    ha_core: HomeAssistant, robot: SimulatedDevice, board: OttoBoard
) -> None:
    instance = await merged_api(ha_core, registry_device_id(ha_core))

    result = await call(instance, ACTION, action="moonwalk", steps=2)

    assert result == llm.ToolResult({"result": True})
    # Only what the model gave: the device's own defaults fill the rest.
    assert robot.tool_calls[-1] == (
        "self.otto.action",
        {"action": "moonwalk", "steps": 2},
    )
    assert board.actions[-1]["action"] == "moonwalk"
    status = await call(instance, f"{NAMESPACE}self_get_device_status")
    assert status.data == {"result": board.device_status()}
    text = await call(instance, f"{NAMESPACE}self_otto_get_status")
    assert text.data == {"result": "moving"}


async def test_arguments_the_device_would_refuse_never_reach_it(
    ha_core: HomeAssistant, robot: SimulatedDevice
) -> None:
    instance = await merged_api(ha_core, registry_device_id(ha_core))
    calls = len(robot.tool_calls)

    with pytest.raises(probatio.Invalid, match="at most 100"):
        await call(instance, ACTION, action="walk", steps=500)
    with pytest.raises(probatio.Invalid, match="required"):
        await call(instance, VOLUME)

    assert len(robot.tool_calls) == calls


async def test_a_volume_set_by_the_assistant_shows_on_the_volume_entity(
    ha_core: HomeAssistant, robot: SimulatedDevice, board: OttoBoard
) -> None:
    entity_id = er.async_get(ha_core).async_get_entity_id(
        NUMBER_DOMAIN, DOMAIN, f"{MAC}-volume"
    )
    assert entity_id is not None
    instance = await merged_api(ha_core, registry_device_id(ha_core))

    await call(instance, VOLUME, volume=35)

    assert board.volume == 35
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == "35"


async def test_a_device_error_is_the_models_tool_error(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    def broken(_arguments: dict[str, Any]) -> bool:
        raise ToolCallError("Lamp driver not ready")

    device = devices(tools=[SimTool("self.lamp.turn_on", "Turn on", callback=broken)])
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    instance = await merged_api(ha_core, registry_device_id(ha_core))

    with pytest.raises(HomeAssistantError) as err:
        await call(instance, f"{NAMESPACE}self_lamp_turn_on")

    assert str(err.value) == message(
        "device_tool_failed",
        device="Kitchen speaker",
        tool="self.lamp.turn_on",
        error="Lamp driver not ready",
    )


async def test_a_device_that_does_not_answer_times_out(
    ha_core: HomeAssistant, robot: SimulatedDevice
) -> None:
    our_api(ha_core).tool_timeout = 0.05
    instance = await merged_api(ha_core, registry_device_id(ha_core))
    robot.answer_mcp = False

    with pytest.raises(HomeAssistantError) as err:
        await call(instance, f"{NAMESPACE}self_otto_stop")

    # (Home Assistant drops the period of exception messages.)
    assert str(err.value) == message("device_timeout", device="Kitchen speaker").rstrip(
        "."
    )
    robot.answer_mcp = True
    assert (await call(instance, f"{NAMESPACE}self_otto_stop")).data == {"result": True}


async def test_a_device_leaving_mid_call_fails_the_call(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    started = asyncio.Event()

    async def slow(_arguments: dict[str, Any]) -> bool:
        started.set()
        await asyncio.Event().wait()
        return True

    device = devices(tools=[SimTool("self.chassis.dance", "Dance", callback=slow)])
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    instance = await merged_api(ha_core, registry_device_id(ha_core))

    pending = asyncio.create_task(call(instance, f"{NAMESPACE}self_chassis_dance"))
    await started.wait()
    await device.close()

    with pytest.raises(HomeAssistantError) as err:
        await pending
    assert str(err.value).startswith("Kitchen speaker is not connected")
    # A call after the device left fails the same way, at once.
    with pytest.raises(HomeAssistantError):
        await call(instance, f"{NAMESPACE}self_chassis_dance")


async def test_calls_to_one_device_run_one_at_a_time(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    """The firmware runs one tool at a time: a queued call's timeout waits too."""
    gate = asyncio.Event()
    running: list[str] = []

    async def gated(name: str) -> bool:
        running.append(name)
        await gate.wait()
        return True

    device = devices(
        tools=[
            SimTool("self.a", callback=lambda _a: gated("a")),
            SimTool("self.b", callback=lambda _a: gated("b")),
        ]
    )
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == 2)
    instance = await merged_api(ha_core, registry_device_id(ha_core))

    first = asyncio.create_task(call(instance, f"{NAMESPACE}self_a"))
    await until_true(lambda: running == ["a"])
    second = asyncio.create_task(call(instance, f"{NAMESPACE}self_b"))
    # Nothing in the call suspends before it is sent, but the device's lock: the
    # second call runs to its first suspension and is not sent.
    await asyncio.sleep(0)
    assert runtime.link is not None
    assert runtime.link.tool_client().pending == 1
    gate.set()

    assert (await first).data == {"result": True}
    assert (await second).data == {"result": True}
    assert [name for name, _ in device.tool_calls] == ["self.a", "self.b"]


async def until_true(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------- through the pipeline


async def test_our_agent_moves_the_robot_while_it_speaks_the_first_clause(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    board: OttoBoard,
) -> None:
    """The model says it will dance, calls the robot, then answers."""
    moving = asyncio.Event()
    done = asyncio.Event()

    async def dance(arguments: dict[str, Any]) -> Any:
        moving.set()
        await done.wait()
        return board.action(arguments)

    tools = [
        SimTool(tool.name, tool.description, tool.properties, callback=dance)
        if tool.name == "self.otto.action"
        else tool
        for tool in board.tools()
    ]
    device = devices(tools=tools)
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    fake_provider.add_transcript("跳个舞")
    fake_provider.add_reply(
        ChatReply.tool_call(ACTION, {"action": "moonwalk"}, text="好的，我跳个舞"),
        ChatReply.text("跳完了！"),
    )

    await say(device)
    await moving.wait()
    # The words before the call play while the robot still moves.
    await until(lambda: bool(device.received_audio))
    assert not done.is_set()
    done.set()
    messages = await answer_messages(device)

    assert device.tool_calls[-1] == ("self.otto.action", {"action": "moonwalk"})
    assert board.actions == [{**board.actions[0], "action": "moonwalk"}]
    assert "跳完了！" in sentences(messages)
    tools_sent = fake_provider.chat_requests[0]["tools"]
    assert ACTION in [tool["function"]["name"] for tool in tools_sent]
    [result] = [m for m in chat_messages(fake_provider, 1) if m["role"] == "tool"]
    assert result["content"] == '{"data":{"result":true},"error":false}'


async def test_a_failing_device_tool_is_answered_not_fatal(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    robot: SimulatedDevice,
) -> None:
    """Out of range: the model hears why, nothing reaches the device, the turn goes on."""
    fake_provider.add_transcript("走一千步")
    fake_provider.add_reply(
        ChatReply.tool_call(ACTION, {"action": "walk", "steps": 1000}),
        ChatReply.text("我最多只能走一百步。"),
    )
    calls = len(robot.tool_calls)

    await say(robot)
    messages = await answer_messages(robot)

    assert sentences(messages) == ["我最多只能走一百步。"]
    assert len(robot.tool_calls) == calls
    [result] = [m for m in chat_messages(fake_provider, 1) if m["role"] == "tool"]
    assert '"error":true' in result["content"]
    assert "at most 100" in result["content"]


async def test_a_conversation_right_after_the_wake_word_waits_for_the_tools(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    board: OttoBoard,
) -> None:
    listing = asyncio.Event()
    device = devices(tools=board.tools())
    device.hold_mcp = listing
    await device.open()

    pending = asyncio.create_task(merged_api(ha_core, registry_device_id(ha_core)))
    listing.set()
    instance = await pending

    assert ACTION in {tool.name for tool in instance.tools}


async def test_a_device_that_lists_no_tools_is_not_waited_for(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty listing is a listing: the conversation does not wait for another."""
    monkeypatch.setattr(
        "custom_components.xiaozhi.device.tools_api.TOOL_DISCOVERY_WAIT_S", 3600.0
    )
    device = devices(tools=[])
    await device.open()
    await wait_until(runtime, lambda: runtime.tools_listed)

    async with asyncio.timeout(30):
        instance = await merged_api(ha_core, registry_device_id(ha_core))

    assert not [tool for tool in instance.tools if tool.name.startswith(NAMESPACE)]


async def test_a_tool_whose_arguments_cannot_be_checked_is_left_out(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = devices(
        tools=[
            SimTool("self.odd.unusable", "", {"level": {"type": "weird"}}),
            SimTool(
                "self.odd.formatted",
                "",
                {"count": {"type": "integer", "format": "int32", "default": 1}},
            ),
            SimTool("self.lamp.turn_on", "Turn on"),
        ]
    )
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == 3)

    instance = await merged_api(ha_core, registry_device_id(ha_core))

    names = {tool.name for tool in instance.tools if tool.name.startswith(NAMESPACE)}
    assert names == {f"{NAMESPACE}self_odd_formatted", f"{NAMESPACE}self_lamp_turn_on"}
    assert "Not offering self.odd.unusable of Kitchen speaker" in caplog.text
    # Built once per listing: the next conversation logs nothing new.
    caplog.clear()
    await merged_api(ha_core, registry_device_id(ha_core))
    assert "self.odd" not in caplog.text


async def test_what_a_tool_reports_as_failure_and_its_images_reach_the_model(
    ha_core: HomeAssistant, robot: SimulatedDevice
) -> None:
    """Results the firmware never sends, other clients may: isError, image items."""
    instance = await merged_api(ha_core, registry_device_id(ha_core))
    robot.answer_mcp = False

    def status_request() -> dict[str, Any] | None:
        return next(
            (
                request
                for request in robot.mcp_requests
                if request.get("params", {}).get("name") == "self.otto.get_status"
            ),
            None,
        )

    pending = asyncio.create_task(call(instance, f"{NAMESPACE}self_otto_get_status"))
    await until(lambda: status_request() is not None)
    request = status_request()
    assert request is not None
    await robot.mcp_reply(
        request["id"],
        result={
            "content": [
                {"type": "text", "text": "camera busy"},
                {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
            ],
            "isError": True,
        },
    )

    assert await pending == llm.ToolResult(
        {"result": "camera busy", "images": 1}, error=True
    )
