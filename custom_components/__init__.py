"""Custom components folder (namespace for Home Assistant)."""
