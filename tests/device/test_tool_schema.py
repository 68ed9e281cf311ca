"""Device tool schemas as probatio schemas: faithful rendering, exact validation."""

import json
from typing import Any

import probatio
import pytest

from homeassistant.helpers.llm import selector_serializer

from custom_components.xiaozhi.device.tool_schema import (
    UnusableSchemaError,
    tool_parameters,
)
from simulator.board import OttoBoard


def rendered(schema: probatio.Schema, serializer: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = probatio.to_openapi(
        schema, custom_serializer=serializer, openapi_version="3.1.0"
    )
    return result


def otto_schema(name: str) -> dict[str, Any]:
    [tool] = [tool for tool in OttoBoard().tools() if tool.name == name]
    schema: dict[str, Any] = json.loads(tool.to_json())["inputSchema"]
    return schema


# The firmware's action tool: every property has a default, so none is required.
ACTION = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "default": "sit"},
        "steps": {"type": "integer", "default": 3, "minimum": 1, "maximum": 100},
        "direction": {"type": "integer", "default": 1, "minimum": -1, "maximum": 1},
    },
}


@pytest.mark.parametrize("serializer", [None, selector_serializer])
def test_firmware_shapes_render_as_the_device_declared_them(serializer: Any) -> None:
    """With no serializer, and with Assist's, which a merged API stops at."""
    parameters, native = tool_parameters(otto_schema("self.otto.action"))

    assert native
    openapi = rendered(parameters, serializer)
    assert openapi["properties"]["steps"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 3,
    }
    assert openapi["properties"]["direction"] == {
        "type": "integer",
        "minimum": -1,
        "maximum": 1,
        "default": 1,
    }
    assert openapi["properties"]["action"] == {"type": "string", "default": "sit"}
    assert "required" not in openapi

    volume, _ = tool_parameters(otto_schema("self.audio_speaker.set_volume"))
    assert rendered(volume, serializer) == {
        "type": "object",
        "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["volume"],
        "additionalProperties": False,
    }
    empty, _ = tool_parameters(otto_schema("self.otto.stop"))
    assert rendered(empty, serializer)["properties"] == {}


def test_booleans_numbers_enums_lengths_arrays_and_descriptions() -> None:
    parameters, native = tool_parameters(
        {
            "type": "object",
            "properties": {
                "on": {"type": "boolean", "description": "Switch it on"},
                "level": {"type": "number", "minimum": 0, "maximum": 1},
                "mode": {"type": "string", "enum": ["press_to_talk", "click_to_talk"]},
                "label": {"type": "string", "minLength": 1, "maxLength": 8},
                "rgb": {"type": "array", "items": {"type": "integer", "maximum": 255}},
            },
            "required": ["on"],
        }
    )

    assert native
    properties = rendered(parameters)["properties"]
    assert properties["on"] == {"type": "boolean", "description": "Switch it on"}
    assert properties["level"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert properties["mode"] == {
        "type": "string",
        "enum": ["press_to_talk", "click_to_talk"],
    }
    assert properties["label"] == {"type": "string", "minLength": 1, "maxLength": 8}
    assert properties["rgb"] == {
        "type": "array",
        "items": {"type": "integer", "maximum": 255},
    }
    assert parameters({"on": True, "level": 1, "rgb": [1, 2]}) == {
        "on": True,
        "level": 1.0,
        "rgb": [1, 2],
    }


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"steps": True}, "not a boolean"),
        ({"steps": 3.0}, "expected int"),
        ({"steps": 101}, "at most 100"),
        ({"direction": -2}, "at least -1"),
        ({"action": 5}, "expected str"),
        ({"dance": "yes"}, "not a valid option"),
    ],
)
def test_validation_refuses_what_the_device_would(
    arguments: dict[str, Any], error: str
) -> None:
    parameters, _ = tool_parameters(ACTION)

    with pytest.raises(probatio.Invalid, match=error):
        parameters(arguments)


def test_validation_fills_defaults_and_needs_the_required() -> None:
    parameters, _ = tool_parameters(ACTION)
    assert parameters({"action": "moonwalk"}) == {
        "action": "moonwalk",
        "steps": 3,
        "direction": 1,
    }
    volume, _ = tool_parameters(otto_schema("self.audio_speaker.set_volume"))
    with pytest.raises(probatio.Invalid, match="required"):
        volume({})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "integer", "format": "int32"}}},
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}},
        {"type": "object", "properties": {"a": {"type": "integer", "default": "x"}}},
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
        {"type": "object", "properties": {}, "additionalProperties": True},
        {"type": "object", "properties": {"a": {"type": "boolean", "minimum": 1}}},
        {"type": "object", "properties": {"a": {"type": "string", "enum": [1]}}},
        {"type": "object", "properties": {"a": {"type": "integer", "items": {}}}},
        {"type": "object", "properties": {"a": {"type": "integer", "enum": [1]}}},
        {"type": "array"},
    ],
)
def test_schemas_outside_the_subset_fall_back_to_probatios_decoder(
    schema: dict[str, Any],
) -> None:
    parameters, native = tool_parameters(schema)

    assert not native
    assert isinstance(parameters, probatio.Schema)


def test_a_fallback_schema_still_validates_exactly() -> None:
    parameters, native = tool_parameters(
        {
            "type": "object",
            "properties": {"count": {"type": "integer", "format": "int32"}},
            "required": ["count"],
        }
    )

    assert not native
    assert parameters({"count": 3}) == {"count": 3}
    with pytest.raises(probatio.Invalid):
        parameters({"count": 3.5})
    with pytest.raises(probatio.Invalid):
        parameters({})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "if": {"properties": {}}},
        {"type": 5},
        {"type": "object", "properties": {"a": {"type": "weird"}}},
        {"type": "object", "properties": {"a": {"type": "integer", "minimum": "0"}}},
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": 1.5}}},
        {"type": "object", "properties": {"a": "integer"}},
        {"type": "object", "properties": []},
    ],
)
def test_a_schema_nothing_can_check_is_unusable(schema: dict[str, Any]) -> None:
    with pytest.raises(UnusableSchemaError):
        tool_parameters(schema)
