"""The device-facing server: registry of links, authentication, OTA, pairing, limits."""
