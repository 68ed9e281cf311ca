"""A device tool's JSON schema as the probatio schema Home Assistant's LLM tools take.

Agents render a tool's parameters with ``probatio.to_openapi``, with the custom
serializer of the agent's API. Two reasons to build the schema from probatio's
own validators rather than decode it with ``probatio.from_openapi`` (what HA's
MCP integration does):

* ``from_openapi`` loses ``integer`` on the way back (``{"type": "integer"}``
  renders as ``{}``, with a range as ``number``), and nearly every device argument
  is an integer (steps, speed, volume...);
* with Assist and our API selected together, HA's merged serializer stops at
  Assist's (it answers ``UNSUPPORTED`` for anything it does not know, which the
  merge takes as a result), so a schema must render right with no serializer.

The firmware's schemas are a small subset (main/mcp_server.h: ``boolean``,
``integer`` with an optional range, ``string``, an optional ``default``;
required exactly when there is no default), rendered here faithfully; numbers,
string enums and lengths, descriptions and arrays of those are understood too.
Anything else falls back to ``from_openapi`` (validation stays exact, rendering
may lose detail) and a schema even that refuses makes the tool unusable, never
the device's other tools.
"""

from collections.abc import Callable, Mapping
from typing import Any, Final

import probatio

# Keywords of the subset built natively; others send a schema to the fallback.
_PROPERTY_KEYS: Final = frozenset(
    {
        "type",
        "description",
        "default",
        "minimum",
        "maximum",
        "enum",
        "minLength",
        "maxLength",
        "items",
        "title",
    }
)
_OBJECT_KEYS: Final = frozenset(
    {"type", "properties", "required", "title", "description", "$schema"}
)
_BOUND_KEYS: Final = {
    "integer": ("minimum", "maximum"),
    "number": ("minimum", "maximum"),
}


class UnusableSchemaError(ValueError):
    """Neither the native subset nor probatio's decoder can validate the schema."""


class _OutsideSubsetError(ValueError):
    """The schema uses something the native subset does not build."""


def _refuse_booleans(value: Any) -> Any:
    """Refuse ``True``/``False`` where a number is expected (``int`` takes them)."""
    if isinstance(value, bool):
        raise probatio.Invalid("expected a number, not a boolean")
    return value


def _number_bounds(prop: Mapping[str, Any]) -> list[Any]:
    low, high = prop.get("minimum"), prop.get("maximum")
    for bound in (low, high):
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, int | float)
        ):
            raise _OutsideSubsetError(f"bound {bound!r} is not a number")
    if low is None and high is None:
        return []
    return [probatio.Range(min=low, max=high)]


def _string_validator(prop: Mapping[str, Any]) -> Any:
    checks: list[Any] = [str]
    enum = prop.get("enum")
    if enum is not None:
        if not (
            isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum)
        ):
            raise _OutsideSubsetError("enum of something other than strings")
        checks.append(probatio.In(list(enum)))
    shortest, longest = prop.get("minLength"), prop.get("maxLength")
    if shortest is not None or longest is not None:
        for bound in (shortest, longest):
            if bound is not None and (
                isinstance(bound, bool) or not isinstance(bound, int)
            ):
                raise _OutsideSubsetError(f"length bound {bound!r} is not an integer")
        checks.append(probatio.Length(min=shortest, max=longest))
    return checks[0] if len(checks) == 1 else probatio.All(*checks)


def _validator(prop: Any) -> Any:
    """Return the probatio validator of one property schema."""
    if not isinstance(prop, Mapping):
        raise _OutsideSubsetError("a property schema that is not an object")
    if extra := prop.keys() - _PROPERTY_KEYS:
        raise _OutsideSubsetError(f"keywords {sorted(extra)}")
    kind = prop.get("type")
    if kind != "string" and (
        "enum" in prop or "minLength" in prop or "maxLength" in prop
    ):
        raise _OutsideSubsetError(f"string keywords on {kind!r}")
    if kind not in _BOUND_KEYS and ("minimum" in prop or "maximum" in prop):
        raise _OutsideSubsetError(f"bounds on {kind!r}")
    if kind != "array" and "items" in prop:
        raise _OutsideSubsetError(f"items on {kind!r}")
    match kind:
        case "boolean":
            return bool
        case "integer":
            return probatio.All(_refuse_booleans, int, *_number_bounds(prop))
        case "number":
            return probatio.All(_refuse_booleans, float, *_number_bounds(prop))
        case "string":
            return _string_validator(prop)
        case "array" if isinstance(prop.get("items"), Mapping):
            return [_validator(prop["items"])]
    raise _OutsideSubsetError(f"type {kind!r}")


def _checked_default(name: str, validator: Any, default: Any) -> Any:
    """Return a property's default, refusing one its own type does not take."""
    try:
        probatio.Schema(validator)(default)
    except probatio.Invalid as err:
        raise _OutsideSubsetError(f"default of {name!r}: {err}") from None
    return default


def _native_schema(schema: Mapping[str, Any]) -> probatio.Schema:
    if extra := schema.keys() - _OBJECT_KEYS:
        raise _OutsideSubsetError(f"keywords {sorted(extra)}")
    if schema.get("type", "object") != "object":
        raise _OutsideSubsetError("arguments that are not an object")
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, Mapping) or not isinstance(required, list):
        raise _OutsideSubsetError("malformed properties or required")
    fields: dict[Any, Any] = {}
    for name, prop in properties.items():
        validator = _validator(prop)
        options: dict[str, Any] = {}
        if isinstance(prop.get("description"), str):
            options["description"] = prop["description"]
        if "default" in prop:
            options["default"] = _checked_default(name, validator, prop["default"])
        marker: Callable[..., Any] = (
            probatio.Required if name in required else probatio.Optional
        )
        fields[marker(name, **options)] = validator
    if unknown := set(required) - set(properties):
        raise _OutsideSubsetError(f"required {sorted(map(str, unknown))} not described")
    return probatio.Schema(fields)


def tool_parameters(schema: Mapping[str, Any]) -> tuple[probatio.Schema, bool]:
    """Return the parameters of a tool with this ``inputSchema``.

    The flag says whether the schema was built natively (it renders faithfully);
    otherwise it came from ``probatio.from_openapi``, which validates exactly but
    may render integers as numbers or untyped.

    Raises:
        UnusableSchemaError: The schema cannot be validated at all.
    """
    try:
        return _native_schema(schema), True
    except _OutsideSubsetError:
        pass
    try:
        return probatio.from_openapi(dict(schema)), False
    except probatio.SchemaError as err:
        raise UnusableSchemaError(str(err)) from err
