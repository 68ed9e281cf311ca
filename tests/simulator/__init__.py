"""Tests of the command-line device simulator."""
