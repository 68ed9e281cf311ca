"""An Assist pipeline that can talk, made for a service with speech.

Home Assistant makes its first pipeline ("Home Assistant") before any speech
engine exists, so on a fresh install the preferred pipeline has neither
speech-to-text nor text-to-speech, and a paired device hears nothing. When a
service entry with a conversation, an STT and a TTS subentry is set up and the
preferred pipeline cannot talk (no STT or TTS engine, or one that is not
loaded), this creates a pipeline of the entry's agent, STT and TTS in Home
Assistant's language (``assist_pipeline.async_create_default_pipeline``, as
HA's cloud integration does) and makes it the preferred one.

It never replaces a pipeline that can talk, and it creates one pipeline per
entry at most: once a pipeline of the entry's three entities exists, it does
nothing (the user may have chosen another on purpose). The check waits until
Home Assistant has started, so that other integrations' engines of the
preferred pipeline are loaded before it is judged.
"""

from homeassistant.components.assist_pipeline import (
    async_create_default_pipeline,
    async_get_pipelines,
    async_update_pipeline,
)
from homeassistant.const import Platform
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.start import async_at_started

from . import ha_internals
from .const import DOMAIN, LOGGER, SUBENTRY_CONVERSATION, SUBENTRY_STT, SUBENTRY_TTS
from .provider.client import ProviderConfigEntry
from .voice.pipeline import pipeline_problem_by_id

_PLATFORMS = {
    SUBENTRY_CONVERSATION: Platform.CONVERSATION,
    SUBENTRY_STT: Platform.STT,
    SUBENTRY_TTS: Platform.TTS,
}


@callback
def speech_entities(
    hass: HomeAssistant, entry: ProviderConfigEntry
) -> tuple[str, str, str] | None:
    """Return the entry's agent, STT and TTS entity ids; None unless it has all three."""
    registry = er.async_get(hass)
    found: dict[str, str] = {}
    for subentry in entry.subentries.values():
        platform = _PLATFORMS.get(subentry.subentry_type)
        if platform is None or subentry.subentry_type in found:
            continue
        entity_id = registry.async_get_entity_id(platform, DOMAIN, subentry.subentry_id)
        if entity_id is not None:
            found[subentry.subentry_type] = entity_id
    if len(found) < len(_PLATFORMS):
        return None
    return found[SUBENTRY_CONVERSATION], found[SUBENTRY_STT], found[SUBENTRY_TTS]


async def async_ensure_voice_pipeline(
    hass: HomeAssistant, entry: ProviderConfigEntry
) -> str | None:
    """Create and prefer a pipeline of the entry's speech if the preferred one cannot talk.

    Returns the id of the pipeline created, None when none was needed.
    """
    entities = speech_entities(hass, entry)
    if entities is None:
        return None
    agent, stt_engine, tts_engine = entities
    preferred, problem = pipeline_problem_by_id(hass, None)
    if problem is None:
        return None
    for pipeline in async_get_pipelines(hass):
        if (
            pipeline.conversation_engine,
            pipeline.stt_engine,
            pipeline.tts_engine,
        ) == entities:
            LOGGER.debug(
                "Pipeline %s of %s exists; the preferred %s is left alone",
                pipeline.name,
                entry.title,
                preferred,
            )
            return None
    created = await async_create_default_pipeline(
        hass, stt_engine, tts_engine, entry.title
    )
    if created is None:
        LOGGER.warning(
            "Cannot create a voice pipeline of %s: its speech engines do not "
            "support Home Assistant's language %s; choose a pipeline in "
            "Settings > Voice assistants",
            entry.title,
            hass.config.language,
        )
        return None
    await async_update_pipeline(
        hass,
        created,
        conversation_engine=agent,
        conversation_language=hass.config.language,
    )
    ha_internals.set_preferred_pipeline(hass, created.id)
    LOGGER.info(
        "Created the Assist pipeline %r (%s, %s, %s, language %s) and made it "
        "preferred: the preferred pipeline %r could not talk (%s)",
        created.name,
        agent,
        stt_engine,
        tts_engine,
        created.language,
        preferred,
        problem,
    )
    return created.id


@callback
def async_offer_voice_pipeline(
    hass: HomeAssistant, entry: ProviderConfigEntry
) -> CALLBACK_TYPE:
    """Run `async_ensure_voice_pipeline` once Home Assistant has started.

    Returns the call that cancels it (for the entry's unload).
    """

    async def ensure(hass: HomeAssistant) -> None:
        await async_ensure_voice_pipeline(hass, entry)

    return async_at_started(hass, ensure)
