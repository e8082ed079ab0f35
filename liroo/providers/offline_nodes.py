"""JSON Schema nodes as the offline filler reads them: types, bounds, the words of a name.

Both dialects the filler meets are read here: pydantic's JSON Schema and the
OpenAPI subset the Gemini SDK sends (upper-case types, snake_case keywords,
int64 spelled as strings).
"""

from __future__ import annotations

import re
import uuid
from typing import Any


def type_of(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), None)
    if kind:
        return str(kind).lower()
    if "properties" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return None


def bound(node: dict[str, Any], inclusive: str, exclusive: str, step: float) -> float | None:
    value = node.get(inclusive)
    bound = None if value is None else float(value)
    strict = node.get(exclusive)
    if isinstance(strict, bool):  # JSON Schema draft 4 / OpenAPI 3.0: a flag on the inclusive bound
        return bound + step if strict and bound is not None else bound
    if strict is not None:
        moved = float(strict) + step
        bound = moved if bound is None else (max(bound, moved) if step > 0 else min(bound, moved))
    return bound


def words_of(name: str) -> list[str]:
    """``correctAnswerID`` -> ["correct", "answer", "id"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced).replace("_", " ").replace("-", " ")
    return [w.lower() for w in spaced.split()]


def singular_of(name: str) -> str:
    words = words_of(name)
    if not words:
        return ""
    last = words[-1]
    if last.endswith("ies"):
        last = last[:-3] + "y"
    elif last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return last


def snake_to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest) if rest and head else key


def is_text(node: dict[str, Any]) -> bool:
    """A free string: no enum or const to keep to."""
    return (
        type_of(node) == "string"
        and not node.get("enum")
        and "const" not in node
        and not node.get("format")
    )


def option_id_key(option: dict[str, Any]) -> str | None:
    """The field of an option object that identifies it (``id``, ``option_id``...)."""
    return next((k for k in option.get("properties") or {} if words_of(k)[-1:] == ["id"]), None)


def is_options(words: list[str]) -> bool:
    return bool(set(words) & {"options", "choices", "answers", "alternatives"})


def is_link(words: list[str]) -> bool:
    return bool(set(words) & {"url", "uri", "link", "href"})


def as_int(value: Any) -> int | None:
    return None if value is None else int(value)  # Gemini's schema may spell int64 as a string


def clamp(want: int, lo: Any, hi: Any, default_max: int | None = None) -> int:
    low = as_int(lo) or 0
    high = as_int(hi) if hi is not None else default_max
    n = max(want, low, 1 if (high is None or high > 0) else 0)
    return min(n, high) if high is not None else n


def formatted(fmt: str, words: list[str], index: int) -> str:
    if fmt == "date-time":
        return "2024-01-01T00:00:00Z"
    if fmt == "date":
        return "2024-01-01"
    if fmt == "time":
        return "12:00:00"
    if fmt == "uuid":
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"liroo-offline:{'-'.join(words)}:{index}"))
    if fmt == "email":
        return "reader@example.com"
    return f"https://example.com/{'-'.join(words) or 'item'}/{index + 1}"


def key_for(properties: dict[str, dict[str, Any]], hints: set[str]) -> str | None:
    """The first free-text field whose name carries one of ``hints``."""
    return next((k for k, v in properties.items() if is_text(v) and set(words_of(k)) & hints), None)


def shorten(text: str, hi: int, lo: int | None) -> str:
    """``text`` cut to ``hi`` characters: at the last sentence end that fits, else at a word."""
    cut = text[:hi]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", cut)]
    if ends and (lo is None or ends[-1] >= lo):
        return cut[: ends[-1]]
    shorter = cut.rsplit(" ", 1)[0].rstrip(",;:") if " " in cut.strip() else cut
    return shorter if shorter and (lo is None or len(shorter) >= lo) else cut
