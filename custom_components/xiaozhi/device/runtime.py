"""What a loaded device entry holds: its live link, tools and listeners."""

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, callback

from ..const import CONF_ENTRY_KIND, ENTRY_KIND_DEVICE, ENTRY_KIND_PROVIDER, LOGGER
from .camera import DeviceCamera

if TYPE_CHECKING:
    from ..protocol.mcp import McpTool
    from .handler import SessionHandler
    from .link import DeviceLink
    from .session import DeviceSession


def entry_kind(entry: ConfigEntry) -> str:
    """Return whether the entry is a provider (the default) or a paired device."""
    kind: str = entry.data.get(CONF_ENTRY_KIND, ENTRY_KIND_PROVIDER)
    return kind


def is_device_entry(entry: ConfigEntry) -> bool:
    """Return whether the entry is a paired device."""
    return entry_kind(entry) == ENTRY_KIND_DEVICE


type SessionHandlerFactory = Callable[[DeviceSession], SessionHandler]
type ToolCallListener = Callable[[str, Mapping[str, Any]], None]


class DeviceRuntime:
    """What a loaded device entry holds: its live link, its tools, its listeners.

    Entities subscribe with :meth:`async_add_listener`; listeners are called without
    arguments whenever the device connects, becomes ready, disconnects, starts or
    stops listening or speaking, or its MCP tools change, and read the state here
    (``connected``, ``session.listening``, ``session.speaking``, ``tools``).

    Attributes:
        mac: The device's MAC address.
        link: The live link, from authentication until it ends.
        tools: The MCP tools the device offered when it last connected.
        handler_factory: Creates the voice handler of each new session; None
            until the voice layer registers one.
        camera: The device's photos (when it has a camera).
        tool_lock: Held by each tool call an assistant makes: the firmware runs
            one tool at a time, and a call's timeout must not include the ones
            queued before it.
        last_reply_delay: Seconds from the end of the user's speech to the
            first audio of the device's last reply (None: no reply yet).
    """

    def __init__(self, mac: str) -> None:
        """Start disconnected, without tools or handler."""
        self.mac = mac
        self.link: DeviceLink | None = None
        self.tools: tuple[McpTool, ...] = ()
        # Whether the device listed its tools since HA started: a listing may be
        # empty (a client without tools), which is not "not listed yet".
        self.tools_listed = False
        self.handler_factory: SessionHandlerFactory | None = None
        self.camera = DeviceCamera(self.async_update_listeners)
        self.tool_lock = asyncio.Lock()
        self.last_reply_delay: float | None = None
        self._listeners: list[CALLBACK_TYPE] = []
        self._tool_call_listeners: list[ToolCallListener] = []

    @property
    def connected(self) -> bool:
        """Return whether a link is open and the device said hello on it."""
        return self.link is not None and self.link.ready

    @property
    def session(self) -> DeviceSession | None:
        """Return the live voice session, if any."""
        return None if self.link is None else self.link.session

    @callback
    def async_add_listener(self, update_callback: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call ``update_callback`` on every change; returns the unsubscribe call."""
        self._listeners.append(update_callback)

        @callback
        def remove_listener() -> None:
            if update_callback in self._listeners:
                self._listeners.remove(update_callback)

        return remove_listener

    @callback
    def async_update_listeners(self) -> None:
        """Tell every listener that something changed."""
        for update_callback in list(self._listeners):
            try:
                update_callback()
            except Exception:
                LOGGER.exception("Error in a listener of device %s", self.mac)

    @callback
    def async_set_reply_delay(self, seconds: float) -> None:
        """Keep how long the last reply took to start playing."""
        self.last_reply_delay = seconds
        self.async_update_listeners()

    @callback
    def async_set_handler_factory(
        self, factory: SessionHandlerFactory
    ) -> CALLBACK_TYPE:
        """Serve this device's sessions with handlers from ``factory``.

        A live session switches at once. Returns the call that unregisters the
        factory (sessions then fall back to the logging handler).
        """
        self.handler_factory = factory
        self._async_refresh_session_handler()

        @callback
        def unset_factory() -> None:
            if self.handler_factory is factory:
                self.handler_factory = None
                self._async_refresh_session_handler()

        return unset_factory

    @callback
    def _async_refresh_session_handler(self) -> None:
        if (session := self.session) is not None:
            session.refresh_handler()

    @callback
    def async_attach(self, link: DeviceLink) -> None:
        """Make ``link`` the device's live link (the caller ended the old one)."""
        self.link = link
        self.async_update_listeners()

    @callback
    def async_detach(self, link: DeviceLink) -> None:
        """Forget ``link`` if it is still the live one."""
        if self.link is link:
            self.link = None
            self.async_update_listeners()

    @callback
    def async_set_tools(self, tools: Iterable[McpTool]) -> None:
        """Keep the device's MCP tools."""
        self.tools = tuple(tools)
        self.tools_listed = True
        self.async_update_listeners()

    @callback
    def async_add_tool_call_listener(self, listener: ToolCallListener) -> CALLBACK_TYPE:
        """Call ``listener(tool, arguments)`` after each tool call the device carried out.

        Returns the unsubscribe call.
        """
        self._tool_call_listeners.append(listener)

        @callback
        def remove_listener() -> None:
            if listener in self._tool_call_listeners:
                self._tool_call_listeners.remove(listener)

        return remove_listener

    @callback
    def async_tool_called(self, tool: str, arguments: Mapping[str, Any]) -> None:
        """Tell the tool call listeners that the device carried out a call."""
        for listener in list(self._tool_call_listeners):
            try:
                listener(tool, arguments)
            except Exception:
                LOGGER.exception("Error in a tool call listener of device %s", self.mac)


type DeviceConfigEntry = ConfigEntry[DeviceRuntime]
