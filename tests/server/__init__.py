"""Tests of server/: the OTA and activation endpoints, pairing, rate limits."""
