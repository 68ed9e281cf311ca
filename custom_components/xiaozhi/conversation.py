"""Conversation agent streaming from an OpenAI-compatible Chat Completions API."""

from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from typing import Final, Literal, override

import openai
from openai.types.chat import ChatCompletionFunctionToolParam

from homeassistant.components import conversation
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT, MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import translation
from homeassistant.util import language as language_util

from .const import (
    CONF_MAX_TOKENS,
    CONF_MODEL,
    CONF_PRESET,
    CONF_TEMPERATURE,
    DOMAIN,
    LOGGER,
    MAX_TOOL_ROUNDS,
    RECOMMENDED_MAX_TOKENS,
    RECOMMENDED_TEMPERATURE,
    SUBENTRY_CONVERSATION,
)
from .ha_internals import AbstractConversationAgent
from .provider.chat_stream import (
    ERROR_INVALID_AUTH,
    ChatAnswer,
    ContentDelta,
    StreamOutcome,
    answer_chunks,
    convert_content,
    error_translation_key,
    format_tool,
    transform_stream,
)
from .provider.client import ProviderConfigEntry
from .provider.entity import ProviderSubentryEntity, subentry_platform
from .voice.listening import async_until_committed

PARALLEL_UPDATES = 0

# Seconds the service may stay silent (connecting, before the first token, between
# tokens) before the answer is given up: someone is waiting for it.
REQUEST_TIMEOUT: Final = 60.0
# One quick retry hides a blip (a 5xx, a stale pooled connection); more would
# leave the speaker silent for seconds.
MAX_RETRIES: Final = 1

# Languages this integration ships translations for (translations/*.json).
TRANSLATED_LANGUAGES: Final = ("en", "zh-Hans")

# The preset whose service is OpenAI itself.
OPENAI_PRESET: Final = "openai"

MESSAGE_EMPTY_ANSWER: Final = "empty_response"
MESSAGE_TOOL_ROUND_LIMIT: Final = "tool_round_limit"


def translation_language(language: str | None) -> str:
    """Return the shipped translation closest to a conversation language.

    Conversation languages are speech tags such as ``zh-cn``; translations are
    named like ``zh-Hans``.
    """
    if language and (found := language_util.matches(language, TRANSLATED_LANGUAGES)):
        return found[0]
    return "en"


async def _tool_calls_when_committed(
    hass: HomeAssistant,
    deltas: AsyncIterable[ContentDelta],
    device_id: str | None,
) -> AsyncGenerator[ContentDelta]:
    """Pass the deltas on; a tool call only once the device's utterance is over.

    Home Assistant starts a tool as soon as its call arrives in the chat log.
    """
    async for delta in deltas:
        if "tool_calls" in delta:
            await async_until_committed(hass, device_id)
        yield delta


async def async_translate(
    hass: HomeAssistant,
    language: str | None,
    key: str,
    placeholders: dict[str, str] | None = None,
) -> str:
    """Return the message of an ``exceptions`` translation key in a language.

    Home Assistant renders exception messages in English; a voice answer has
    to be in the language the person speaks.
    """
    translations = await translation.async_get_translations(
        hass, translation_language(language), "exceptions", {DOMAIN}
    )
    message = translations.get(f"component.{DOMAIN}.exceptions.{key}.message", key)
    return message.format(**placeholders) if placeholders else message


class XiaozhiConversationEntity(
    conversation.ConversationEntity,
    AbstractConversationAgent,
    ProviderSubentryEntity,
):
    """A conversation agent answering with streamed chat completions."""

    _attr_supports_streaming = True

    def __init__(self, entry: ProviderConfigEntry, subentry: ConfigSubentry) -> None:
        """Describe the agent from its subentry."""
        super().__init__(entry, subentry)
        if subentry.data.get(CONF_LLM_HASS_API):
            self._attr_supported_features = (
                conversation.ConversationEntityFeature.CONTROL
            )

    @property
    @override
    def supported_languages(self) -> list[str] | Literal["*"]:
        """Return that the model understands any language."""
        return MATCH_ALL

    @override
    async def async_added_to_hass(self) -> None:
        """Register as the entry's agent."""
        await super().async_added_to_hass()
        conversation.async_set_agent(self.hass, self.entry, self)

    @override
    async def async_will_remove_from_hass(self) -> None:
        """Unregister as the entry's agent."""
        conversation.async_unset_agent(self.hass, self.entry)
        await super().async_will_remove_from_hass()

    @override
    async def _async_handle_message(
        self,
        user_input: conversation.ConversationInput,
        chat_log: conversation.ChatLog,
    ) -> conversation.ConversationResult:
        """Answer the user input, running the tools the model calls."""
        options = self.subentry.data
        try:
            await chat_log.async_provide_llm_data(
                user_input.as_llm_context(DOMAIN),
                options.get(CONF_LLM_HASS_API),
                options.get(CONF_PROMPT),
                user_input.extra_system_prompt,
            )
        except conversation.ConverseError as err:
            return err.as_conversation_result()
        await self._async_handle_chat_log(
            chat_log, user_input.language, user_input.device_id
        )
        return conversation.async_get_result_from_chat_log(user_input, chat_log)

    async def _async_handle_chat_log(
        self,
        chat_log: conversation.ChatLog,
        language: str | None,
        device_id: str | None = None,
    ) -> None:
        """Ask the model until it answers without calling tools."""
        tools = self._tools(chat_log)
        for _ in range(MAX_TOOL_ROUNDS):
            outcome = await self._async_stream_round(
                chat_log, tools, language, device_id
            )
            if not chat_log.unresponded_tool_results:
                await self._async_check_answer(chat_log, language, outcome)
                return
        limit = {"rounds": str(MAX_TOOL_ROUNDS)}
        await self._async_say(
            chat_log,
            await async_translate(self.hass, language, MESSAGE_TOOL_ROUND_LIMIT, limit),
        )

    async def _async_check_answer(
        self,
        chat_log: conversation.ChatLog,
        language: str | None,
        outcome: StreamOutcome,
    ) -> None:
        """Raise when the model ended its turn without saying anything."""
        last = chat_log.content[-1]
        if isinstance(last, conversation.AssistantContent) and last.content:
            return
        # Typically all tokens went to thinking, or a content filter hit.
        LOGGER.warning(
            "%s got no answer from the model (finish reason: %s)",
            self.entity_id,
            outcome.finish_reason,
        )
        raise await self._async_failure(chat_log, language, MESSAGE_EMPTY_ANSWER)

    @staticmethod
    def _tools(chat_log: conversation.ChatLog) -> list[ChatCompletionFunctionToolParam]:
        if chat_log.llm_api is None:
            return []
        serializer = chat_log.llm_api.custom_serializer
        return [format_tool(tool, serializer) for tool in chat_log.llm_api.tools]

    async def _async_stream_round(
        self,
        chat_log: conversation.ChatLog,
        tools: list[ChatCompletionFunctionToolParam],
        language: str | None,
        device_id: str | None = None,
    ) -> StreamOutcome:
        """Stream one answer into the chat log; Home Assistant runs its tool calls.

        A tool call waits while the device's utterance may still go on (a
        speculative turn, `voice.listening`): a guess must not act.
        """
        outcome = StreamOutcome()
        try:
            # Leaving this block any way, a cancelled task included, closes
            # the HTTP response, so the service stops generating. Failures
            # while the answer is read end up in the outcome, not here.
            async with self._request(chat_log, tools) as answer:
                deltas = transform_stream(answer_chunks(answer), outcome)
                async for _content in chat_log.async_add_delta_content_stream(
                    self.entity_id,
                    _tool_calls_when_committed(self.hass, deltas, device_id),
                ):
                    pass
        except openai.OpenAIError as err:
            outcome.error = err
        if outcome.usage is not None:
            chat_log.async_trace(
                {
                    "stats": {
                        "input_tokens": outcome.usage.prompt_tokens,
                        "output_tokens": outcome.usage.completion_tokens,
                    }
                }
            )
        if outcome.error is not None:
            raise await self._async_provider_failure(
                chat_log, language, outcome.error
            ) from outcome.error
        return outcome

    def _request(
        self,
        chat_log: conversation.ChatLog,
        tools: list[ChatCompletionFunctionToolParam],
    ) -> AsyncContextManager[ChatAnswer]:
        """Return the request of one answer, streamed; entering it sends it.

        The raw response is asked for: services that ignore ``stream`` answer
        one JSON completion, which the SDK's stream would read as nothing.
        """
        options = self.subentry.data
        max_tokens = options.get(CONF_MAX_TOKENS, RECOMMENDED_MAX_TOKENS)
        # OpenAI's reasoning models refuse max_tokens; most other services
        # know only max_tokens.
        uses_openai = self.entry.data.get(CONF_PRESET) == OPENAI_PRESET
        client = self.client.with_options(
            timeout=REQUEST_TIMEOUT, max_retries=MAX_RETRIES
        )
        return client.chat.completions.with_streaming_response.create(
            model=options[CONF_MODEL],
            messages=convert_content(chat_log.content),
            stream=True,
            temperature=options.get(CONF_TEMPERATURE, RECOMMENDED_TEMPERATURE),
            max_tokens=openai.omit if uses_openai else max_tokens,
            max_completion_tokens=max_tokens if uses_openai else openai.omit,
            tools=tools or openai.omit,
        )

    async def _async_provider_failure(
        self, chat_log: conversation.ChatLog, language: str | None, err: Exception
    ) -> HomeAssistantError:
        """Return the error to raise for a failed request, after reacting to it."""
        key = error_translation_key(err)
        LOGGER.warning(
            "Chat request of %s failed: %s: %s", self.entity_id, type(err).__name__, err
        )
        if key == ERROR_INVALID_AUTH:
            self.entry.async_start_reauth(self.hass)
        return await self._async_failure(chat_log, language, key)

    async def _async_failure(
        self, chat_log: conversation.ChatLog, language: str | None, key: str
    ) -> HomeAssistantError:
        """Say what went wrong, and return it as the error to raise.

        Saying it through the chat log matters when the answer is already being
        spoken as it streams: the pipeline then speaks only streamed text, and
        the error would otherwise end the answer in silence. What was streamed
        before stays in the chat log.
        """
        message = await async_translate(self.hass, language, key)
        await self._async_say(chat_log, message)
        return HomeAssistantError(
            message, translation_domain=DOMAIN, translation_key=key
        )

    async def _async_say(self, chat_log: conversation.ChatLog, text: str) -> None:
        """Add an assistant message the way streamed answers are added."""

        async def one_message() -> AsyncGenerator[ContentDelta]:
            yield {"role": "assistant", "content": text}

        async for _content in chat_log.async_add_delta_content_stream(
            self.entity_id, one_message()
        ):
            pass


# One entity per conversation subentry.
async_setup_entry = subentry_platform(SUBENTRY_CONVERSATION, XiaozhiConversationEntity)
