"""One fake OpenAI-compatible provider for the tests, the benchmarks and the demo.

See `fake_provider.server` for the scripted server the tests drive and
`fake_provider.demo` for the demo's canned behaviour.
"""

from .server import (
    CHAT_PATH,
    MODELS_PATH,
    SPEECH_PATH,
    TRANSCRIPTIONS_PATH,
    ChatReply,
    ErrorEvent,
    FakeProvider,
    ReasoningDelta,
    RecordedRequest,
    SpeechRequest,
    SpeechSettings,
    StreamRecord,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    TranscriptionRequest,
    Usage,
)

__all__ = [
    "CHAT_PATH",
    "MODELS_PATH",
    "SPEECH_PATH",
    "TRANSCRIPTIONS_PATH",
    "ChatReply",
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
    "TranscriptionRequest",
    "Usage",
]
