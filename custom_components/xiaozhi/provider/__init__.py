"""The OpenAI-compatible service: client, chat stream, transcription, speech."""
