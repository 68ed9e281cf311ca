"""Tests of voice/: a device's turns through HA's Assist pipeline and their speech."""
