"""Hypothesis settings of the protocol fuzz tests."""

from hypothesis import HealthCheck, settings

# The conftest's autouse HA fixture is function scoped; these tests do not use it.
fuzz = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
