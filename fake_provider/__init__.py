"""One fake OpenAI-compatible provider for the tests, the benchmarks and the demo.

A real aiohttp server that the real ``openai`` SDK talks to, in two modes of one
app: scripted (`FakeProvider`: a test queues replies and transcripts, injects
failures, holds streams) and demo (`FakeProvider.for_demo`, or
``python -m fake_provider --demo``: canned answers by keyword rules, speech by
espeak-ng, ears for a closed vocabulary of zh and en phrases). Only aiohttp, PyAV and numpy are needed, no Home Assistant and no
pytest; the pytest fixture lives in tests/helpers/provider.py.

Modules: `server` (the app and its modes), `chat` (what a reply is made of),
`wire` (OpenAI's JSON and SSE), `quirks` (switches for roughly compatible
servers), `inputs` (what clients send, validated like OpenAI), `audio` (WAV,
synthesizers), `demo` (the canned behaviour), `listener` (what the demo
hears), `text`.
"""

from .audio import SpeechSettings
from .chat import (
    ChatReply,
    ErrorEvent,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .demo import DemoMode
from .inputs import (
    ChatImage,
    RecordedRequest,
    SpeechRequest,
    StreamRecord,
    TranscriptionRequest,
)
from .quirks import ChatQuirks, TranscriptAnswer
from .server import (
    CHAT_PATH,
    MODELS_PATH,
    SPEECH_PATH,
    TRANSCRIPTIONS_PATH,
    FakeProvider,
)

__all__ = [
    "CHAT_PATH",
    "MODELS_PATH",
    "SPEECH_PATH",
    "TRANSCRIPTIONS_PATH",
    "ChatImage",
    "ChatQuirks",
    "ChatReply",
    "DemoMode",
    "ErrorEvent",
    "FakeProvider",
    "ReasoningDelta",
    "RecordedRequest",
    "SpeechRequest",
    "SpeechSettings",
    "StreamRecord",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "TranscriptAnswer",
    "TranscriptionRequest",
    "Usage",
]
