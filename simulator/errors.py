"""The simulator's error for failures explained to the user."""


class SimulatorError(Exception):
    """A failure with a message for the user; the command exits with status 1."""
