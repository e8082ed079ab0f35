"""Schemas for structured output, in the subset every provider accepts.

The Gemini Developer API rejects ``additionalProperties``, which is what a
``dict[str, X]`` field becomes in JSON Schema. Model such a field as a list of
``Pair`` (``{"key": ..., "value": ...}``) and turn it back into a dict with
``pairs_to_dict`` where the API needs an object:

    class Comic(BaseModel):
        character_style_guide: list[Pair]      # not dict[str, str]

    comic = provider.generate_structured(prompt, Comic)
    guide = pairs_to_dict(comic.character_style_guide)

Gemini's response schema is an OpenAPI subset: besides dicts it has no
``gt``/``lt`` (exclusive bounds; use ``ge``/``le``), ``multiple_of``, sets,
tuples, discriminated unions (``oneOf``) or non-string ``Literal``/``Enum`` values.
Both providers call ``check_schema`` first, so such a schema fails the same
way offline as in production: with ``UnsupportedSchema`` naming the field and
what to write instead.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

from pydantic import BaseModel


class Pair(BaseModel):
    """One entry of what would have been a dict."""

    key: str
    value: str


def pairs_to_dict(pairs: Iterable[Pair]) -> dict[str, str]:
    """The pairs as a dict; a repeated key keeps its first value (models sometimes repeat one)."""
    result: dict[str, str] = {}
    for pair in pairs:
        result.setdefault(pair.key, pair.value)
    return result


def dict_to_pairs(mapping: Mapping[str, str]) -> list[Pair]:
    return [Pair(key=key, value=value) for key, value in mapping.items()]


class UnsupportedSchema(TypeError):
    """A schema structured output cannot use (a programming error, not a provider failure)."""


# The JSON Schema keywords Gemini's response schema (an OpenAPI subset) carries; the SDK refuses
# others.
_SUPPORTED = frozenset(
    {
        "type",
        "title",
        "description",
        "default",
        "enum",
        "const",
        "format",
        "pattern",
        "nullable",
        "example",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "additionalProperties",
        "propertyOrdering",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "anyOf",
        "$ref",
        "$defs",
    }
)
_INSTEAD = {
    "additionalProperties": "a dict field: model it as list[Pair] and convert with pairs_to_dict()",
    "exclusiveMinimum": "use ge= instead of gt=",
    "exclusiveMaximum": "use le= instead of lt=",
    "multipleOf": "drop multiple_of and check it after",
    "uniqueItems": "use a list instead of a set",
    "prefixItems": "use a list or a model instead of a tuple",
    "oneOf": "use a plain union, without a discriminator",
    "const": "Literal and Enum values must be strings",
    "enum": "Literal and Enum values must be strings",
    "examples": "put examples in the description",
}
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


@functools.lru_cache(maxsize=256)
def check_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """Return ``schema``'s JSON Schema, or raise UnsupportedSchema naming the field and what to do
    instead."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise UnsupportedSchema(f"structured output needs a pydantic model class, got {schema!r}")
    json_schema = schema.model_json_schema()
    for path, node in _subschemas(json_schema, schema.__name__):
        for key, value in node.items():
            allowed = key in _SUPPORTED
            if key == "additionalProperties":
                allowed = not value
            elif key == "const":
                allowed = isinstance(value, str)
            elif key == "enum":
                allowed = all(isinstance(v, str) for v in value)
            if not allowed:
                raise UnsupportedSchema(
                    f"{path}: {key} is not supported by Gemini's structured output "
                    f"({_INSTEAD.get(key, 'remove it')})"
                )
    return json_schema


def _subschemas(node: dict[str, Any], path: str):
    """Every sub-schema (not default or example values), with a readable path to it."""
    yield path, node
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (node.get(key) or {}).items():
            yield from _subschemas(sub, f"{path}.{name}" if key == "properties" else name)
    for key in _SUBSCHEMA_LISTS:
        for sub in node.get(key) or []:
            yield from _subschemas(sub, path)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            yield from _subschemas(node[key], path)
