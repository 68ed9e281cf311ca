"""Tests of text/: the sentence splitter, emoji emotions, the look-ahead engine."""
