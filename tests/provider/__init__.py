"""Tests of provider/: the chat stream, transcription and speech logic."""
