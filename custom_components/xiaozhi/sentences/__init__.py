"""Pure text transforms for speech: the sentence splitter and emoji emotions (no Home Assistant)."""
