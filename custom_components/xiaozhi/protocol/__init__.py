"""The Xiaozhi wire protocol: messages, framing, audio codecs, MCP, pacing (no Home Assistant)."""
