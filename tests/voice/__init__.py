"""Tests of the voice turn."""
