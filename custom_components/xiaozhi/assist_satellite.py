"""The assist satellite of a paired device: its voice requests run through HA.

Each device has one satellite entity. It serves the device's sessions with a
`voice.session.VoiceSession` and runs their turns through its selected Assist
pipeline (the device's pipeline select; VAD sensitivity from its VAD select) up
to the intent stage; the speaking stage is the voice session's own, from the
first clause on (see `voice.turn`). Its state follows the turn: listening,
processing, responding until the answer's playback ends, idle.

Announcements (and conversations started by HA) are streamed to the device while
it is connected: a Xiaozhi device connects only for a conversation and stays
connected a while after, so HA cannot reach it at other times. An announcement
to a device that is not connected waits for it a while (``announce.CONNECT_WAIT_S``:
HA's satellite wizard tests the connection with one right after pairing).

The satellite also owns the device's timers (``voice/timers.py``): HA's timer
handler of its device, for as long as the entity exists.
"""

import asyncio
import contextlib
from typing import Final, override

from homeassistant.components.assist_pipeline import (
    OPTION_PREFERRED,
    PipelineEvent,
    async_get_pipelines,
)
from homeassistant.components.assist_satellite import (
    AssistSatelliteAnnouncement,
    AssistSatelliteConfiguration,
    AssistSatelliteEntityDescription,
    AssistSatelliteEntityFeature,
)
from homeassistant.components.tts import ATTR_PREFERRED_FORMAT
from homeassistant.const import Platform
from homeassistant.core import callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import chat_session, entity_registry as er

from . import ha_internals
from .const import CONF_DEVICE_LANGUAGE, DOMAIN, LOGGER
from .device.entity import (
    XiaozhiDeviceEntity,
    device_platform,
    pipeline_select_unique_id,
    vad_sensitivity_select_unique_id,
)
from .device.link import DeviceLink
from .device.messages import device_message
from .device.runtime import DeviceConfigEntry
from .device.session import DeviceSession
from .device.supervisor import SessionClosedError
from .voice.announce import (
    CONNECT_WAIT_S,
    AnnouncementError,
    announcement_audio,
    async_wait_for_voice_session,
)
from .voice.pipeline import PipelineListener, pipeline_problem_by_id
from .voice.pipeline_check import async_report_pipeline, pipeline_issue_raised
from .voice.session import DeviceDisconnectedError, VoiceSession
from .voice.timers import DeviceTimers
from .voice.tts_audio import WAV_FORMAT, TtsError
from .voice.turn import PipelineRun

PARALLEL_UPDATES = 0

SATELLITE_KEY: Final = "assist_satellite"
# Push to talk: the device's listen stop ends the utterance, never a pause. HA's
# VAD still ends a command after its 15 s timeout.
MANUAL_SILENCE_SECONDS: Final = 15.0

ERROR_NOT_CONNECTED: Final = "device_not_connected"
ERROR_DID_NOT_CONNECT: Final = "device_did_not_connect"
ERROR_ANNOUNCEMENT: Final = "announcement_failed"
# The face an announcement shown on an idle device's screen comes with.
ANNOUNCEMENT_EMOTION: Final = "neutral"


class XiaozhiAssistSatellite(XiaozhiDeviceEntity, ha_internals.SatelliteWithRunSilence):
    """A Xiaozhi device as an Assist satellite."""

    entity_description = AssistSatelliteEntityDescription(key=SATELLITE_KEY)
    # The device's main feature: the entity is named after the device
    # (assist_satellite.<device>), as HA's naming rules ask.
    _attr_name = None
    _attr_supported_features = (
        AssistSatelliteEntityFeature.ANNOUNCE
        | AssistSatelliteEntityFeature.START_CONVERSATION
    )
    # Announcements are synthesized as WAV, which is decoded here without ffmpeg.
    _attr_tts_options = {ATTR_PREFERRED_FORMAT: WAV_FORMAT}  # noqa: RUF012

    def __init__(self, entry: DeviceConfigEntry) -> None:
        """Create the satellite of a paired device."""
        super().__init__(entry, SATELLITE_KEY)
        self._run_listener: PipelineListener | None = None
        self._manual_run = False
        self._announcing = False
        self.timers: DeviceTimers | None = None
        # How long an announcement waits for the device to connect.
        self.connect_wait = CONNECT_WAIT_S
        self._connection_tests = asyncio.Lock()

    @property
    def device_language(self) -> str | None:
        """Return the language of the device's firmware."""
        language: str | None = self.entry.data.get(CONF_DEVICE_LANGUAGE)
        return language

    @property
    @override
    def pipeline_entity_id(self) -> str | None:
        """Return the device's pipeline select."""
        return self._select_entity_id(pipeline_select_unique_id(self.runtime.mac))

    @property
    @override
    def vad_sensitivity_entity_id(self) -> str | None:
        """Return the device's VAD sensitivity select."""
        return self._select_entity_id(
            vad_sensitivity_select_unique_id(self.runtime.mac)
        )

    def _select_entity_id(self, unique_id: str) -> str | None:
        registry = er.async_get(self.hass)
        return registry.async_get_entity_id(Platform.SELECT, DOMAIN, unique_id)

    async def async_added_to_hass(self) -> None:
        """Serve the device's sessions with voice sessions, and its timers."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.runtime.async_set_handler_factory(self._new_voice_session)
        )
        if self.registry_entry is not None and self.registry_entry.device_id:
            self.timers = DeviceTimers(self, self.registry_entry.device_id)
            self.async_on_remove(self.timers.async_start())
        self.async_on_remove(
            ha_internals.listen_pipeline_changes(
                self.hass, self._async_pipelines_changed
            )
        )

    @callback
    def _async_pipelines_changed(self) -> None:
        """Check again once the user changed a pipeline, if this one could not talk."""
        if pipeline_issue_raised(self.hass, self.entry.entry_id):
            self.async_check_pipeline()

    def _new_voice_session(self, session: DeviceSession) -> VoiceSession:
        return VoiceSession(self, session)

    # The voice session's host ------------------------------------------------------

    def selected_pipeline_id(self) -> str | None:
        """Return the id of the pipeline the device's select picks; None: the preferred.

        What the base class resolves before a run, from the select's state.
        """
        entity_id = self.pipeline_entity_id
        state = None if entity_id is None else self.hass.states.get(entity_id)
        if state is None or state.state == OPTION_PREFERRED:
            return None
        for pipeline in async_get_pipelines(self.hass):
            if pipeline.name == state.state:
                return pipeline.id
        return None

    @callback
    def async_check_pipeline(self) -> bool:
        """Return whether the device's pipeline can talk; raise or clear its repair issue."""
        name, problem = pipeline_problem_by_id(self.hass, self.selected_pipeline_id())
        async_report_pipeline(
            self.hass, self.entry.entry_id, self.entry.title, name, problem
        )
        return problem is None

    async def async_run_pipeline(self, run: PipelineRun) -> None:
        """Run the selected pipeline up to the intent stage; events go to the run's listener.

        A typed request (``run.text``) runs the intent stage alone.
        """
        self._keep_conversation()
        self._run_listener = run.listener
        self._manual_run = run.manual
        try:
            if run.text is not None:
                await ha_internals.run_text_to_intent(self, run.text)
            else:
                await ha_internals.run_pipeline_to_intent(
                    self, run.audio, wake_word_phrase=run.wake_word_phrase
                )
        finally:
            if self._run_listener is run.listener:
                self._run_listener = None

    def _keep_conversation(self) -> None:
        """Register the conversation's chat session before the run uses it.

        The run stores its session only when it ends normally; one cancelled
        by a barge-in would otherwise start the next turn in a new conversation.
        """
        with chat_session.async_get_chat_session(
            self.hass, ha_internals.satellite_conversation_id(self)
        ) as session:
            ha_internals.set_satellite_conversation_id(self, session.conversation_id)

    @callback
    def async_set_responding(self) -> None:
        """Show the device answering until `async_response_finished`."""
        # The run ends at the intent stage, so HA's own TTS stage never says the
        # run has speech: its end would show idle while the answer still plays.
        ha_internals.show_satellite_responding(self)

    @callback
    def async_response_finished(self) -> None:
        """Show the device idle, unless an announcement now plays."""
        if not self._announcing:
            self.tts_response_finished()

    @override
    def run_silence_seconds(self) -> float | None:
        """Return push to talk's silence; auto runs use the VAD select's."""
        return MANUAL_SILENCE_SECONDS if self._manual_run else None

    @override
    def on_pipeline_event(self, event: PipelineEvent) -> None:
        """Hand the event to the turn whose run it belongs to."""
        if self._run_listener is None:
            return
        try:
            self._run_listener(event)
        except Exception:
            LOGGER.exception("Error handling pipeline event %s", event.type)

    # Configuration -------------------------------------------------------------------

    @callback
    @override
    def async_get_configuration(self) -> AssistSatelliteConfiguration:
        """Return no wake words: the device detects its own, fixed in its firmware."""
        return AssistSatelliteConfiguration(
            available_wake_words=[], active_wake_words=[], max_active_wake_words=0
        )

    @override
    async def async_set_configuration(
        self, config: AssistSatelliteConfiguration
    ) -> None:
        """Refuse: the device's wake word cannot be changed from here."""
        raise NotImplementedError

    # Announcements ---------------------------------------------------------------

    @override
    async def async_internal_announce(
        self,
        message: str | None = None,
        media_id: str | None = None,
        preannounce: bool = True,
        preannounce_media_id: str = ha_internals.default_preannounce_media_id,
    ) -> None:
        """Announce; HA's connection test first waits for the device, its turn, no raise.

        HA's satellite wizard tests the connection right after pairing, in a
        task nobody awaits, and may test twice at once (it can open twice).
        Each test passes once its own sound is fetched: tests take turns, each
        waits for the device before HA marks the satellite busy, and a failure
        is logged, not raised (the wizard reports the timeout itself).
        """
        if not ha_internals.is_connection_test(media_id):
            await super().async_internal_announce(
                message, media_id, preannounce, preannounce_media_id
            )
            return
        async with self._connection_tests:
            # An idle device on MQTT+UDP is connected already: it passes on its link.
            if self._idle_lasting_link() is None and (
                await async_wait_for_voice_session(self.runtime, self.connect_wait)
                is None
            ):
                LOGGER.warning(
                    "Connection test: %s did not connect within %g s; press its "
                    "button or say its wake word, then test again",
                    self.entry.title,
                    self.connect_wait,
                )
                return
            try:
                await super().async_internal_announce(
                    message, media_id, preannounce, preannounce_media_id
                )
            except HomeAssistantError as err:
                LOGGER.warning(
                    "Connection test of %s failed: %s", self.entry.title, err
                )

    @override
    async def async_announce(self, announcement: AssistSatelliteAnnouncement) -> None:
        """Play the announcement on the device; returns when it has been played.

        Raises:
            HomeAssistantError: The device is not connected, or the audio
                cannot be played.
        """
        await self._async_play(announcement)

    @override
    async def async_start_conversation(
        self, start_announcement: AssistSatelliteAnnouncement
    ) -> None:
        """Play the announcement; the device then listens for the answer.

        Raises:
            HomeAssistantError: The device is not connected, or the audio
                cannot be played.
        """
        await self._async_play(start_announcement)

    def _idle_lasting_link(self) -> DeviceLink | None:
        """Return the device's link if it is connected for good but not talking."""
        link = self.runtime.link
        if (
            self.runtime.session is None
            and link is not None
            and link.ready
            and link.lasting
        ):
            return link
        return None

    async def _async_play(self, announcement: AssistSatelliteAnnouncement) -> None:
        if (link := self._idle_lasting_link()) is not None:
            if ha_internals.is_connection_test(announcement.original_media_id):
                await self._async_pass_connection_test(link, announcement)
                return
            if announcement.message:
                await self._async_show(link, announcement.message)
                return
        voice = await async_wait_for_voice_session(self.runtime, self.connect_wait)
        if voice is None:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key=ERROR_DID_NOT_CONNECT,
                translation_placeholders={
                    "device": self.entry.title,
                    "seconds": f"{self.connect_wait:g}",
                },
            )
        self._announcing = True
        try:
            await voice.async_announce(
                announcement_audio(self.hass, announcement), announcement.message
            )
        except (DeviceDisconnectedError, SessionClosedError) as err:
            raise self._not_connected() from err
        except (AnnouncementError, TtsError) as err:
            raise _announcement_failed(err) from err
        finally:
            self._announcing = False

    async def _async_pass_connection_test(
        self, link: DeviceLink, announcement: AssistSatelliteAnnouncement
    ) -> None:
        """Pass HA's connection test on an idle, always-connected device.

        The test passes when its sound is fetched from Home Assistant; the
        device never fetches audio itself (Home Assistant streams it), and an
        idle device has no audio channel to play it on. Its live link is the
        connection being tested: the sound is fetched as for playing, and the
        device shows that it is connected.
        """
        try:
            async with contextlib.aclosing(
                announcement_audio(self.hass, announcement)
            ) as audio:
                async for _pcm in audio:
                    pass
        except (AnnouncementError, TtsError) as err:
            raise _announcement_failed(err) from err
        await self._async_show(
            link, device_message("connection_test", self.device_language)
        )

    async def _async_show(self, link: DeviceLink, message: str) -> None:
        """Show an announcement on an idle device's screen, with its chime.

        An idle device on MQTT+UDP has no audio channel, and no message opens
        one: the text and the firmware's notification sound are what it can do.
        """
        title = device_message("announcement_title", self.device_language)
        try:
            await link.send_alert(title, message, ANNOUNCEMENT_EMOTION)
        except SessionClosedError as err:
            raise self._not_connected() from err
        LOGGER.info(
            "Announcement shown on the screen of %s with its chime, not spoken: "
            "an idle device has no audio channel",
            self.entry.title,
        )

    def _not_connected(self) -> HomeAssistantError:
        return HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=ERROR_NOT_CONNECTED,
            translation_placeholders={"device": self.entry.title},
        )


def _announcement_failed(err: Exception) -> HomeAssistantError:
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key=ERROR_ANNOUNCEMENT,
        translation_placeholders={"error": str(err)},
    )


# The device's assist satellite.
async_setup_entry = device_platform(
    lambda _hass, entry: [XiaozhiAssistSatellite(entry)]
)
