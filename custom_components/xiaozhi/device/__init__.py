"""One paired device, whatever its transport: its link, voice sessions, playback, entities."""
