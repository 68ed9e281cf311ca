"""The package's entry points: resolved lazily for Home Assistant, nothing else."""

import pytest

import custom_components.xiaozhi as package
from custom_components.xiaozhi import integration


@pytest.mark.parametrize("name", sorted(package.ENTRY_POINTS))
def test_entry_points_come_from_the_integration_module(name: str) -> None:
    assert getattr(package, name) is getattr(integration, name)


@pytest.mark.parametrize("name", ["setup", "PLATFORM_SCHEMA", "async_setup_platform"])
def test_other_names_are_not_there(name: str) -> None:
    # Home Assistant's loader decides what an integration offers with hasattr.
    assert not hasattr(package, name)
    with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
        getattr(package, name)
