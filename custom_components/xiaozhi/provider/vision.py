"""A question about a device's photo, answered by a chat model of the service that sees.

One Chat Completions request with the photo as an ``image_url`` data URL (what
OpenAI, Qwen-VL, GLM-4V, SiliconFlow's VL models and Ollama's vision models take),
not streamed: the device waits for the whole answer anyway. No retry, and 20 s
at most: the device gives up after 30 s, having spent some of them taking and
sending the photo.
"""

import base64
from typing import Final

import openai

from homeassistant.exceptions import HomeAssistantError

VISION_TIMEOUT_S: Final = 20.0
VISION_INSTRUCTIONS: Final = (
    "The image is a photo the camera of a voice assistant device has just taken."
    " Answer the question about it in a few plain sentences, in the language of the"
    " question: the answer is spoken aloud."
)


def photo_messages(
    question: str, jpeg: bytes
) -> list[openai.types.chat.ChatCompletionMessageParam]:
    """Return the request's messages: the instructions, then the question with the photo."""
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    return [
        {"role": "system", "content": VISION_INSTRUCTIONS},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": question},
                {"type": "image_url", "image_url": {"url": data_url, "detail": "auto"}},
            ],
        },
    ]


async def async_describe_photo(
    client: openai.AsyncOpenAI, model: str, question: str, jpeg: bytes
) -> str:
    """Return what ``model`` answers about the photo.

    Raises:
        HomeAssistantError: The service failed or answered nothing (the text
            says which, for the assistant that asked).
    """
    try:
        completion = await client.with_options(
            timeout=VISION_TIMEOUT_S, max_retries=0
        ).chat.completions.create(
            model=model, messages=photo_messages(question, jpeg), stream=False
        )
    except openai.OpenAIError as err:
        raise HomeAssistantError(
            f"The vision model {model} could not answer: {err}"
        ) from err
    text = completion.choices[0].message.content if completion.choices else None
    if not text or not text.strip():
        raise HomeAssistantError(f"The vision model {model} gave no answer")
    return text.strip()
