"""Tests of device/: links, voice sessions, playback, settings, the firmware check."""
