"""Shared helpers and fixtures of the test suite (fixtures registered by tests/conftest.py)."""
