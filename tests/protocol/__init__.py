"""Tests of protocol/: framing, messages, codecs, MCP, pacing, HA-free imports."""
