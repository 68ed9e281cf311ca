"""The MCP tools of the device a conversation comes from, as the LLM API "Xiaozhi device".

Any conversation agent that has this API selected (ours, OpenAI, Ollama...)
gets, in a conversation that comes from a paired Xiaozhi device, that device's
own tools: moving a robot, its camera, its speaker volume, screen brightness and
theme. The device is the conversation's ``device_id`` (the assist satellite
passes its device; so do timer commands); any other conversation gets no tools.
Selected together with Assist, Home Assistant prefixes every name with
``xiaozhi-device__`` and calls dispatch back here.

What the model is offered (``tool_names``, ``tool_schema``): every tool the
device lists for a model, under a valid, unique name, with its JSON schema as
probatio validators, so that OpenAI's and Ollama's agents render integers and
ranges as the device declared them. Volume and brightness are offered too: the
Assist API has no tool that sets a number entity, and the device's number
entities are configuration entities that are not exposed to assistants, so
nothing offers them twice; after such a call the entities show the new value.

Calls: the arguments are validated first (a bad one is the model's tool error,
and nothing reaches the device), then sent as the model gave them (the device's
own defaults fill the rest), one at a time per device, bounded in time (10 s;
45 s for the camera, which uploads a photo and waits for its answer). Every
failure becomes a ``HomeAssistantError``, which Home Assistant hands the model
as a tool error instead of ending the turn.
"""

import asyncio
from collections.abc import Mapping
import json
from typing import Any, Final

import probatio

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, llm
from homeassistant.util.json import JsonObjectType

from ..const import DEVICE_TOOLS_API_ID, DEVICE_TOOLS_API_NAME, DOMAIN, LOGGER
from ..protocol.mcp import (
    McpClosedError,
    McpError,
    McpTimeoutError,
    McpTool,
    McpToolResult,
)
from ..protocol.sanitize import printable
from .camera import PHOTO_TOOL, vision_url
from .runtime import DeviceConfigEntry, DeviceRuntime, is_device_entry
from .tool_names import ExposedTool, exposed_tools
from .tool_schema import UnusableSchemaError, tool_parameters

TOOL_TIMEOUT_S: Final = 10.0
# The firmware's HTTP client waits 30 s for our answer, after capturing and
# encoding the photo.
PHOTO_TIMEOUT_S: Final = 45.0
# Right after the wake word the device may still be listing its tools.
TOOL_DISCOVERY_WAIT_S: Final = 2.0

PROMPT_NOT_A_DEVICE: Final = (
    "This conversation does not come from a Xiaozhi device: there are no device tools."
)
PROMPT_NOT_CONNECTED: Final = (
    'The Xiaozhi device "{device}" is not connected now: its own abilities are'
    " unavailable."
)
PROMPT_DEVICE: Final = (
    'You are speaking through the Xiaozhi device "{device}". Its tools act on the'
    " device itself: how it moves, what its camera sees, its own speaker volume,"
    " screen brightness and theme. Use them for the device itself only; for"
    " anything else in the home use the other tools."
)
PROMPT_MORE: Final = "\nMore about the tool {tool}: {text}"

_READ_ONLY: Final = llm.ToolAnnotations(
    read_only=True, destructive=False, idempotent=True, open_world=False
)


@callback
def device_entry_of(
    hass: HomeAssistant, device_id: str | None
) -> DeviceConfigEntry | None:
    """Return the loaded entry of the paired device with this device registry id."""
    if device_id is None:
        return None
    device = dr.async_get(hass).async_get(device_id)
    if device is None:
        return None
    # A device belongs to one config entry (HA 2026.10 deprecates the set).
    entry = hass.config_entries.async_get_entry(device.config_entry_id)
    if (
        entry is not None
        and entry.domain == DOMAIN
        and is_device_entry(entry)
        and entry.state is ConfigEntryState.LOADED
        and isinstance(getattr(entry, "runtime_data", None), DeviceRuntime)
    ):
        return entry
    return None


def _annotations(name: str) -> llm.ToolAnnotations:
    """Return what a tool's name says: ``get_*`` tools only read."""
    if name.rsplit(".", 1)[-1].startswith("get_"):
        return _READ_ONLY
    return llm.ToolAnnotations()


def _result_data(result: McpToolResult) -> JsonObjectType:
    """Return a tool's result for the model: its text, parsed when it is JSON."""
    text = result.text
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    data: JsonObjectType = {"result": value}
    images = sum(1 for item in result.content if item.get("type") == "image")
    if images:
        data["images"] = images
    return data


class DeviceTool(llm.Tool):
    """One MCP tool of a device, callable by a language model."""

    def __init__(
        self,
        api: DeviceToolsAPI,
        entry: DeviceConfigEntry,
        exposed: ExposedTool,
        parameters: probatio.Schema,
    ) -> None:
        """Offer ``exposed`` of the device of ``entry``, validating with ``parameters``."""
        self.name = exposed.name
        self.title = exposed.tool.name
        self.description = exposed.description or None
        self.parameters = parameters
        self.annotations = _annotations(exposed.tool.name)
        self.integration = DOMAIN
        self.mcp_name = exposed.tool.name
        self._api = api
        self._entry = entry

    @property
    def timeout(self) -> float:
        """Return how long the device may take to answer a call."""
        if self.mcp_name == PHOTO_TOOL:
            return self._api.photo_timeout
        return self._api.tool_timeout

    async def async_call(
        self,
        hass: HomeAssistant,
        tool_input: llm.ToolInput,
        llm_context: llm.LLMContext,
    ) -> llm.ToolResult:
        """Validate the model's arguments, call the device, return its answer.

        Raises:
            probatio.Invalid: The arguments do not fit the tool's schema.
            HomeAssistantError: The device is not connected, did not answer in
                time, or refused the call.
        """
        validated = self.parameters(tool_input.tool_args)
        arguments = {key: validated[key] for key in tool_input.tool_args}
        runtime = self._entry.runtime_data
        async with runtime.tool_lock:
            result = await self._async_call_device(runtime, arguments)
        if not result.is_error:
            runtime.async_tool_called(self.mcp_name, arguments)
        return llm.ToolResult(_result_data(result), error=result.is_error)

    async def _async_call_device(
        self, runtime: DeviceRuntime, arguments: Mapping[str, Any]
    ) -> McpToolResult:
        link = runtime.link
        if link is None or not runtime.connected:
            raise self._error("device_not_connected")
        try:
            client = link.tool_client()
            if self.mcp_name != PHOTO_TOOL:
                return await client.call_tool(
                    self.mcp_name, arguments, reply_timeout=self.timeout
                )
            if not vision_url(self._api.hass):
                LOGGER.warning(
                    "Home Assistant has no URL of its own (Settings > System >"
                    " Network): the camera of %s cannot send its photo",
                    self._entry.title,
                )
            with runtime.camera.photo_call():
                return await client.call_tool(
                    self.mcp_name, arguments, reply_timeout=self.timeout
                )
        except McpClosedError as err:
            raise self._error("device_not_connected") from err
        except McpTimeoutError as err:
            raise self._error("device_timeout") from err
        except McpError as err:
            raise self._error("device_tool_failed", error=str(err)) from err

    def _error(self, key: str, **placeholders: str) -> HomeAssistantError:
        return HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=key,
            translation_placeholders={
                "device": self._entry.title,
                "tool": self.mcp_name,
                **placeholders,
            },
        )


class DeviceToolsAPI(llm.API):
    """The LLM API whose tools are those of the device the conversation comes from.

    Attributes:
        tool_timeout: Seconds a device may take to answer a tool call.
        photo_timeout: Seconds for the camera's call (photo, upload, answer).
    """

    def __init__(self, hass: HomeAssistant) -> None:
        """Describe the API; register it once with ``llm.async_register_api``."""
        super().__init__(hass=hass, id=DEVICE_TOOLS_API_ID, name=DEVICE_TOOLS_API_NAME)
        self.tool_timeout = TOOL_TIMEOUT_S
        self.photo_timeout = PHOTO_TIMEOUT_S
        # The tools built from each device's last listing (by MAC).
        self._built: dict[str, tuple[tuple[McpTool, ...], list[DeviceTool], str]] = {}

    async def async_get_api_instance(
        self, llm_context: llm.LLMContext
    ) -> llm.APIInstance:
        """Return the tools of the conversation's device, and what to do with them."""
        entry = device_entry_of(self.hass, llm_context.device_id)
        if entry is None:
            return llm.APIInstance(self, PROMPT_NOT_A_DEVICE, llm_context, [])
        runtime = entry.runtime_data
        await _async_wait_for_tools(runtime)
        if not runtime.connected:
            prompt = PROMPT_NOT_CONNECTED.format(device=entry.title)
            return llm.APIInstance(self, prompt, llm_context, [])
        tools, more = self._device_tools(entry)
        prompt = PROMPT_DEVICE.format(device=entry.title) + more
        return llm.APIInstance(self, prompt, llm_context, list(tools))

    def _device_tools(self, entry: DeviceConfigEntry) -> tuple[list[DeviceTool], str]:
        """Return the device's tools and the descriptions' overflow, built once per listing."""
        runtime = entry.runtime_data
        cached = self._built.get(runtime.mac)
        if cached is not None and cached[0] is runtime.tools:
            return cached[1], cached[2]
        tools: list[DeviceTool] = []
        more = ""
        for exposed in exposed_tools(runtime.tools):
            try:
                parameters, native = tool_parameters(exposed.tool.input_schema)
            except UnusableSchemaError as err:
                LOGGER.warning(
                    "Not offering %s of %s to assistants: its arguments cannot be"
                    " checked (%s)",
                    printable(exposed.tool.name, 64),
                    entry.title,
                    printable(err),
                )
                continue
            if not native:
                LOGGER.info(
                    "%s of %s has arguments outside the firmware's kinds; assistants"
                    " may see their types simplified",
                    printable(exposed.tool.name, 64),
                    entry.title,
                )
            tools.append(DeviceTool(self, entry, exposed, parameters))
            if exposed.overflow:
                more += PROMPT_MORE.format(tool=exposed.name, text=exposed.overflow)
        self._built[runtime.mac] = (runtime.tools, tools, more)
        return tools, more


async def _async_wait_for_tools(runtime: DeviceRuntime) -> None:
    """Wait briefly for a device that is listing its tools for the first time.

    Later conversations use the tools of the device's last listing at once.
    """
    link = runtime.link
    if runtime.tools_listed or link is None or link.closed or not link.mcp_supported:
        return
    listed = asyncio.Event()

    @callback
    def check() -> None:
        if runtime.tools_listed or runtime.link is not link or link.closed:
            listed.set()

    unsubscribe = runtime.async_add_listener(check)
    try:
        async with asyncio.timeout(TOOL_DISCOVERY_WAIT_S):
            await listed.wait()
    except TimeoutError:
        LOGGER.debug("%s has not listed its tools yet", runtime.mac)
    finally:
        unsubscribe()
