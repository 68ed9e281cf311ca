"""Turns and speech: the Assist pipeline run of an utterance and the spoken answer."""
