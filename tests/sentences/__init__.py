"""Tests of sentences/: the sentence splitter, emoji emotions, the look-ahead engine."""
