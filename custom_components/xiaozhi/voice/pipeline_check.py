"""A device whose Assist pipeline cannot talk says so, on its screen and in HA.

Before each turn the satellite checks the device's pipeline (`pipeline.pipeline_problem`):
without a loaded speech-to-text and text-to-speech engine the run would fail
validation or be silent. Instead the device shows an ``alert`` in its language
(`device.messages`), and Home Assistant raises a repair issue naming the device,
with a link to the voice assistant settings. The issue goes away at the next
check that finds the pipeline fine: the next turn, or a change of the device's
pipeline select.
"""

from typing import Final

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from ..const import DOMAIN, LOGGER
from .pipeline import PipelineProblem

ISSUE_PIPELINE: Final = "pipeline_cannot_talk"
# Where Home Assistant's UI edits the pipelines.
VOICE_ASSISTANTS_URL: Final = "/config/voice-assistants/assistants"
# The device's alert text (`device.messages`).
MESSAGE_PIPELINE: Final = "pipeline_cannot_talk"


def pipeline_issue_id(entry_id: str) -> str:
    """Return the repair issue id of a device entry."""
    return f"{ISSUE_PIPELINE}_{entry_id}"


def issue_translation_key(problem: PipelineProblem) -> str:
    """Return the repair issue's translation key for a problem."""
    return f"pipeline_{problem.value}"


@callback
def async_report_pipeline(
    hass: HomeAssistant,
    entry_id: str,
    device: str,
    pipeline: str,
    problem: PipelineProblem | None,
) -> None:
    """Raise the device's repair issue for ``problem``, or clear it (None)."""
    issue_id = pipeline_issue_id(entry_id)
    if problem is None:
        if ir.async_get(hass).async_get_issue(DOMAIN, issue_id) is not None:
            LOGGER.info("The pipeline of %s can talk again", device)
            ir.async_delete_issue(hass, DOMAIN, issue_id)
        return
    LOGGER.warning(
        "%s cannot talk: its Assist pipeline %r %s", device, pipeline, problem.value
    )
    ir.async_create_issue(
        hass,
        DOMAIN,
        issue_id,
        is_fixable=False,
        severity=ir.IssueSeverity.ERROR,
        translation_key=issue_translation_key(problem),
        translation_placeholders={"device": device, "pipeline": pipeline},
        learn_more_url=VOICE_ASSISTANTS_URL,
    )


@callback
def async_forget_pipeline_issue(hass: HomeAssistant, entry_id: str) -> None:
    """Drop the device's pipeline issue (its entry is being removed)."""
    ir.async_delete_issue(hass, DOMAIN, pipeline_issue_id(entry_id))
