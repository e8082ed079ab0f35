"""Structured output without a model: any JSON Schema filled from the input text itself.

The offline provider (and the loopback Gemini in the tests) must answer any
schema a generation author writes, so this works on the JSON Schema, not on
known models: objects get every property, arrays a sensible length inside
``minItems``/``maxItems``, strings sentences of the text fitted to
``minLength``/``maxLength``, numbers a value inside their bounds, enums one of
their values. It reads both dialects it meets: pydantic's JSON Schema
(``$ref``/``$defs``, ``anyOf`` with null) and the OpenAPI subset the Gemini
SDK sends (upper-case types, ``nullable``, snake_case keywords).

Property names are hints that make the result read well: a list of objects
shares the text's sentences among its items in order (panels, chapters,
sections); a list of objects with a ``name``/``speaker``/``key`` field gets
one item per person named in its sentences; ``title``-like fields get a few
words, ``image_prompt`` a picture description, ``tags``/``keywords`` words of
the text; an object with a ``question`` and ``options`` becomes a
fill-in-the-blank question whose ``correct...`` field points at the right
option. Deterministic: the same text and schema always give the same answer.

What is read from the text (its source part, sentences, names, words, the
fill-in-the-blank questions) is offline_text.py; this module walks the schema.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

from .offline_text import mentions
from .offline_write import Quiz, Writer

DEFAULT_LIST_LENGTH = 6  # items in a list of objects when the schema sets no maximum
MAX_DEPTH = 8  # deeper than this, lists get their minimum length and optional fields null
FALLBACK_WORDS = ("river", "mountain", "library", "lantern", "garden", "journey")

_NAME_HINTS = {"name", "speaker", "character", "key", "author", "person", "who"}
_TITLE_HINTS = {"title", "heading", "headline", "label", "front", "term"}
_SUMMARY_HINTS = {"theme", "topic", "subject", "overview", "summary", "moral", "lesson"}
_LONG_TEXT_HINTS = {
    "content",
    "script",
    "body",
    "summary",
    "overview",
    "paragraph",
    "story",
    "narration",
    "scene",
    "caption",
    "back",
    "definition",
}
_LINE_HINTS = {"line", "says", "speech", "bubble", "words", "utterance", "message"}
_OPTION_TEXT_HINTS = {"text", "label", "content", "value", "option", "answer", "title", "choice"}
_WORD_LIST_HINTS = {"tags", "keywords", "topics", "terms", "words", "vocabulary", "themes"}


def fill_schema(schema: dict[str, Any], text: str) -> Any:
    """A value satisfying ``schema``, written from ``text`` (a prompt, or the source text
    itself)."""
    filler = _Filler(schema, text)
    return filler.value(schema, "", _Context(_Window(filler.sentences)))


class _Window:
    """The sentences one item is written from, read in order and then again."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.pos = 0

    def take(self) -> str:
        item = self.items[self.pos % len(self.items)]
        self.pos += 1
        return item

    def split(self, n: int) -> list["_Window"]:
        m = len(self.items)
        if m >= n:
            return [_Window(self.items[i * m // n : (i + 1) * m // n]) for i in range(n)]
        return [_Window([self.items[(self.pos + i) % m]]) for i in range(n)]


@dataclass(frozen=True)
class _Context:
    window: _Window
    index: int = 0  # the item's place in its list
    parent: str = "item"  # the singular name of the list or object it belongs to
    person: str | None = None  # the name this item is about
    quiz: Quiz | None = None
    correct_id: Any = None  # the id of the quiz's right option, once its options are written
    depth: int = 0  # objects above this one (a self-referencing model stops growing)


class _Filler:
    def __init__(self, root: dict[str, Any], prompt: str) -> None:
        self.defs = {**root.get("definitions", {}), **root.get("$defs", {})}
        self.writer = Writer(prompt)
        source = self.writer.source
        self.sentences, self.keywords = source.sentences, source.nouns or source.vocabulary
        self.quizzes = 0
        self.padding = 0

    # --- schema plumbing -------------------------------------------------
    def resolve(self, schema: Any) -> dict[str, Any]:
        """The schema with $ref followed, allOf merged and keywords in camelCase."""
        node = {_snake_to_camel(k): v for k, v in (schema or {}).items()}
        for _ in range(32):  # nested $ref chains
            ref = node.pop("$ref", None)
            if ref is None:
                break
            target = self.defs.get(ref.rsplit("/", 1)[-1], {})
            node = {**{_snake_to_camel(k): v for k, v in target.items()}, **node}
        for part in node.pop("allOf", None) or []:
            for key, value in self.resolve(part).items():
                node.setdefault(key, value)
        return node

    def non_null(self, node: dict[str, Any]) -> dict[str, Any]:
        """The first non-null arm of an anyOf/oneOf, resolved; the node itself otherwise."""
        arms = node.get("anyOf") or node.get("oneOf")
        if not arms:
            return node
        for arm in arms:
            resolved = self.resolve(arm)
            if _type_of(resolved) != "null":
                return self.non_null(resolved)
        return {"type": "null"}

    # --- values ----------------------------------------------------------
    def value(self, schema: Any, name: str, ctx: _Context) -> Any:
        node = self.resolve(schema)
        words = _words(name)
        arms = node.get("anyOf") or node.get("oneOf")
        nullable = bool(node.get("nullable")) or bool(
            arms and any(_type_of(self.resolve(a)) == "null" for a in arms)
        )
        if nullable and (_is_link(words) or ctx.depth >= MAX_DEPTH):
            return None  # no links offline: the API fills them once media exists
        node = self.non_null(node)
        if "const" in node:
            return node["const"]
        if node.get("enum"):
            return node["enum"][ctx.index % len(node["enum"])]
        kind = _type_of(node)
        if kind == "object":
            return self.object(node, name, ctx)
        if kind == "array":
            return self.array(node, name, ctx)
        if kind in ("integer", "number"):
            return self.number(node, words, ctx, integer=kind == "integer")
        if kind == "boolean":
            return ctx.index % 2 == 0
        if kind == "null":
            return None
        # strings, and untyped fields (text is the safest guess)
        return self.string(node, words, ctx)

    def object(self, node: dict[str, Any], name: str, ctx: _Context) -> dict[str, Any]:
        properties: dict[str, Any] = node.get("properties") or {}
        order = [key for key in node.get("propertyOrdering") or [] if key in properties]
        order += [key for key in properties if key not in order]
        inner = replace(ctx, parent=_singular(name) or ctx.parent, depth=ctx.depth + 1)
        if ctx.person is None and any(set(_words(k)) & _NAME_HINTS for k in properties):
            cast = self.writer.cast()  # an object with a name is a person of the piece
            inner = replace(inner, person=cast[ctx.index % len(cast)])
        if ctx.quiz is None:  # a new quiz, if this object is one: its right option is not known yet
            inner = replace(inner, quiz=self._quiz_for(properties, ctx), correct_id=None)
        result: dict[str, Any] = {}
        if inner.quiz is not None:
            # A quiz's options are written before its other fields, whatever the order: a "correct"
            # field names the right option's id, which exists only once the options do.
            for key in order:
                if _is_options(_words(key)):
                    result[key] = self.value(properties[key], key, inner)
                    correct_id = self._correct_id(properties[key], result[key], inner)
                    if correct_id is not None:
                        inner = replace(inner, correct_id=correct_id)
        for key in order:
            if key not in result:
                result[key] = self.value(properties[key], key, inner)
        return {key: result[key] for key in order}

    def _correct_id(self, schema: Any, options: Any, ctx: _Context) -> Any:
        """The id of the quiz's right option among ``options`` (as written by _options), if they
        have ids."""
        node = self.non_null(self.resolve(schema))
        if ctx.depth >= MAX_DEPTH or node.get("prefixItems") or "const" in node or node.get("enum"):
            return None  # array() did not write these as the quiz's options
        id_key = _id_key(self.non_null(self.resolve(node.get("items") or {})))
        index = ctx.quiz.correct_index
        if id_key is None or not isinstance(options, list) or index >= len(options):
            return None
        option = options[index]
        return option.get(id_key) if isinstance(option, dict) else None

    def _quiz_for(self, properties: dict[str, Any], ctx: _Context) -> Quiz | None:
        options_key = next((k for k in properties if _is_options(_words(k))), None)
        if options_key is None or not any("question" in _words(k) for k in properties):
            return None
        self.quizzes += 1
        options = self.non_null(self.resolve(properties[options_key]))
        option = self.non_null(self.resolve(options.get("items")))
        if _type_of(options) != "array" or not (_is_text(option) or _type_of(option) == "object"):
            return None
        n = _clamp(4, options.get("minItems"), options.get("maxItems"))
        return Quiz(self.writer, ctx.window.take(), n, self.quizzes)

    def array(self, node: dict[str, Any], name: str, ctx: _Context) -> list[Any]:
        items = node.get("items") or {}
        lo, hi = node.get("minItems"), node.get("maxItems")
        item_node = self.non_null(self.resolve(items))
        singular, words = _singular(name), _words(name)
        if ctx.depth >= MAX_DEPTH:
            return [
                self.value(items, singular, replace(ctx, index=i)) for i in range(_int(lo) or 0)
            ]
        if node.get("prefixItems"):
            return [
                self.value(p, singular, replace(ctx, index=i))
                for i, p in enumerate(node["prefixItems"])
            ]
        free = _type_of(item_node) == "object" or _is_text(item_node)
        if ctx.quiz is not None and _is_options(words) and free:
            return self._options(items, item_node, singular, ctx, lo, hi)
        if _type_of(item_node) == "object":
            return self._objects(items, item_node, singular, ctx, lo, hi)
        if set(words) & _WORD_LIST_HINTS and _is_text(item_node):
            return self._word_list(item_node, ctx, lo, hi)
        return self._plain(node, items, singular, words, ctx)

    def _objects(
        self, items: Any, item_node: dict[str, Any], singular: str, ctx: _Context, lo: Any, hi: Any
    ) -> list[Any]:
        """A list of objects: people (a cast, who says what), or the text shared among them in
        order (panels, chapters, sections)."""
        keys = [set(_words(k)) for k in item_node.get("properties") or {}]
        if any(k & _NAME_HINTS for k in keys):
            if any(k & _LINE_HINTS for k in keys):
                return self._dialogue(items, item_node, singular, ctx, lo, hi)
            return self._people(items, singular, ctx, lo, hi)
        n = _clamp(len(ctx.window.items), lo, hi, default_max=DEFAULT_LIST_LENGTH)
        return [
            self.value(items, singular, replace(ctx, window=part, index=i, quiz=None))
            for i, part in enumerate(ctx.window.split(n))
        ]

    def _word_list(self, item_node: dict[str, Any], ctx: _Context, lo: Any, hi: Any) -> list[str]:
        n = _clamp(min(len(self.keywords), 5), lo, hi)
        pool = self.keywords or list(FALLBACK_WORDS)
        return [
            self._fit(
                pool[i % len(pool)] if i < len(pool) else f"{pool[i % len(pool)]} {i + 1}",
                item_node,
                ctx,
            )
            for i in range(n)
        ]

    def _plain(
        self, node: dict[str, Any], items: Any, singular: str, words: list[str], ctx: _Context
    ) -> list[Any]:
        """Strings, numbers...: strings share the window's sentences (paragraphs, points)."""
        want = 4 if _is_options(words) else min(len(ctx.window.items), 3)
        n = _clamp(want, node.get("minItems"), node.get("maxItems"))
        parts = ctx.window.split(n) if ctx.window.items else [ctx.window] * n
        values = [
            self.value(items, singular, replace(ctx, index=i, window=part))
            for i, part in enumerate(parts)
        ]
        if node.get("uniqueItems"):
            values = [
                f"{v} ({i + 1})" if isinstance(v, str) and v in values[:i] else v
                for i, v in enumerate(values)
            ]
        return values

    def _people(self, items: Any, singular: str, ctx: _Context, lo: Any, hi: Any) -> list[Any]:
        """One item per person of the piece who belongs in the window (a cast)."""
        people = self.writer.source.people
        cast = self.writer.cast()
        named = [
            p for p in cast if p not in people or any(mentions(s, p) for s in ctx.window.items)
        ]
        named = named or cast
        n = _clamp(len(named), lo, hi, default_max=DEFAULT_LIST_LENGTH)
        result = []
        for i in range(n):
            person = named[i % len(named)]
            about = [s for s in ctx.window.items if mentions(s, person)] or ctx.window.items
            window = _Window(about)
            result.append(
                self.value(
                    items, singular, replace(ctx, window=window, index=i, person=person, quiz=None)
                )
            )
        return result

    def _dialogue(
        self, items: Any, item_node: dict[str, Any], singular: str, ctx: _Context, lo: Any, hi: Any
    ) -> list[Any]:
        """Who says what in a panel: a question and its answer, never the caption again."""
        lines = self.writer.exchange(ctx.window.items, ctx.index)
        n = _clamp(len(lines), lo, hi)
        properties = self._properties(item_node)
        speaker_key = _key_for(properties, _NAME_HINTS)
        line_key = _key_for(properties, _LINE_HINTS)
        result = []
        for i in range(n):
            speaker, line = lines[i % len(lines)]
            entry = self.value(items, singular, replace(ctx, index=i, person=speaker, quiz=None))
            if speaker_key:
                entry[speaker_key] = self._fit(speaker, properties[speaker_key], ctx)
            if line_key:
                entry[line_key] = self._fit(line, properties[line_key], ctx)
            result.append(entry)
        return result

    def _properties(self, item_node: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {
            k: self.non_null(self.resolve(v))
            for k, v in (item_node.get("properties") or {}).items()
        }

    def _options(
        self, items: Any, item_node: dict[str, Any], singular: str, ctx: _Context, lo: Any, hi: Any
    ) -> list[Any]:
        quiz = ctx.quiz
        n = _clamp(len(quiz.options), lo, hi)
        texts = [quiz.options[i % len(quiz.options)] for i in range(n)]
        if _type_of(item_node) != "object":
            return [self._fit(text, item_node, ctx) for text in texts]
        properties = self._properties(item_node)
        text_key = _key_for(properties, _OPTION_TEXT_HINTS)
        flag_key = next(
            (
                k
                for k, v in properties.items()
                if _type_of(v) == "boolean" and "correct" in _words(k)
            ),
            None,
        )
        options = []
        for i, text in enumerate(texts):
            option = self.value(items, singular, replace(ctx, index=i, quiz=None))
            if text_key:
                option[text_key] = self._fit(text, properties[text_key], ctx)
            if flag_key:
                option[flag_key] = i == quiz.correct_index
            options.append(option)
        return options

    def string(self, node: dict[str, Any], words: list[str], ctx: _Context) -> str:
        fmt = node.get("format")
        if fmt in ("date-time", "date", "time", "uuid", "email", "uri"):
            return _formatted(fmt, [ctx.parent, *words], ctx.index)
        text = self._quiz_text(words, ctx) if ctx.quiz is not None else None
        if text is None:
            text = self._field_text(words, ctx)
        return self._fit(text, node, ctx)

    def _quiz_text(self, words: list[str], ctx: _Context) -> str | None:
        hints, last, quiz = set(words), (words[-1] if words else ""), ctx.quiz
        if "correct" in hints or last == "answer":
            if last == "id" and ctx.correct_id is not None:
                return str(ctx.correct_id)
            return quiz.answer
        if "question" in hints:
            return quiz.question
        if hints & {"explanation", "rationale", "reason", "feedback", "hint"}:
            return f"The text says: {quiz.sentence}"
        return None

    def _field_text(self, words: list[str], ctx: _Context) -> str:
        """What a field of this name holds, written from the item's window."""
        hints, last, writer, window = (
            set(words),
            (words[-1] if words else ""),
            self.writer,
            ctx.window,
        )
        if last == "id":
            return f"{words[-2] if len(words) > 1 else ctx.parent}-{ctx.index + 1}"
        if _is_link(words):
            return f"offline:{ctx.parent}/{ctx.index + 1}"
        if "prompt" in hints or (hints & {"description", "idea"} and _is_picture(hints, ctx)):
            return writer.picture(window.items)
        if "alt" in hints:
            return writer.alt(window.items)
        if "question" in hints:
            return f"What does the text tell us about {writer.heading_free(window.items)}?"
        if hints & _NAME_HINTS:
            return ctx.person or writer.cast()[ctx.index % len(writer.cast())]
        if ctx.person and hints & {"description", "look", "appearance"}:
            return writer.look(ctx.person)
        if ctx.person and hints & {"personality", "traits", "character"}:
            return writer.personality(ctx.person)
        if hints & _TITLE_HINTS:
            if ctx.depth <= 1:
                return writer.document_title(quiz="quiz" in hints)
            return writer.heading(window.items)
        if hints & _SUMMARY_HINTS and ctx.depth <= 1:
            return writer.summary(ctx.parent)
        if "script" in hints and writer.ask.mode == "lecture":
            return writer.lecture_script(window.items, ctx.index)
        if hints & _LONG_TEXT_HINTS or ctx.person is None:
            return writer.passage(window.items, explained=ctx.depth > 1)
        return writer.passage([window.take()])

    def _fit(self, text: str, node: dict[str, Any], ctx: _Context) -> str:
        """``text`` within minLength/maxLength: longer with the text's next sentences, shorter at a
        sentence's end (else a word's)."""
        lo, hi = _int(node.get("minLength")), _int(node.get("maxLength"))
        for _ in range(1000):
            if lo is None or len(text) >= lo:
                break
            more = next((s for s in ctx.window.items if s not in text), None)
            if more is None:
                more = self.sentences[self.padding % len(self.sentences)]
                self.padding += 1
            text = f"{text} {more}"
        if hi is not None and len(text) > hi:
            text = _shorten(text, hi, lo)
        return text

    def number(
        self, node: dict[str, Any], words: list[str], ctx: _Context, *, integer: bool
    ) -> int | float:
        # Ids, orders, positions and counts alike: the item's place in its list, from 1.
        value: float = ctx.index + 1
        if ctx.quiz is not None and ("correct" in words or words[-1:] == ["answer"]):
            value = ctx.quiz.correct_index
        step = 1 if integer else 0.5
        lo = _bound(node, "minimum", "exclusiveMinimum", +step)
        hi = _bound(node, "maximum", "exclusiveMaximum", -step)
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        multiple = node.get("multipleOf")
        if multiple:
            multiple = float(multiple)
            value = multiple * round(value / multiple)
            if lo is not None and value < lo:
                value += multiple
            if hi is not None and value > hi:
                value -= multiple
        if not integer:
            return float(value)
        rounded = int(round(value))
        return rounded + 1 if lo is not None and rounded < lo else rounded


def _type_of(node: dict[str, Any]) -> str | None:
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


def _bound(node: dict[str, Any], inclusive: str, exclusive: str, step: float) -> float | None:
    value = node.get(inclusive)
    bound = None if value is None else float(value)
    strict = node.get(exclusive)
    if isinstance(strict, bool):  # JSON Schema draft 4 / OpenAPI 3.0: a flag on the inclusive bound
        return bound + step if strict and bound is not None else bound
    if strict is not None:
        moved = float(strict) + step
        bound = moved if bound is None else (max(bound, moved) if step > 0 else min(bound, moved))
    return bound


def _words(name: str) -> list[str]:
    """``correctAnswerID`` -> ["correct", "answer", "id"]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced).replace("_", " ").replace("-", " ")
    return [w.lower() for w in spaced.split()]


def _singular(name: str) -> str:
    words = _words(name)
    if not words:
        return ""
    last = words[-1]
    if last.endswith("ies"):
        last = last[:-3] + "y"
    elif last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return last


def _snake_to_camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest) if rest and head else key


def _is_text(node: dict[str, Any]) -> bool:
    """A free string: no enum or const to keep to."""
    return (
        _type_of(node) == "string"
        and not node.get("enum")
        and "const" not in node
        and not node.get("format")
    )


def _id_key(option: dict[str, Any]) -> str | None:
    """The field of an option object that identifies it (``id``, ``option_id``...)."""
    return next((k for k in option.get("properties") or {} if _words(k)[-1:] == ["id"]), None)


def _is_options(words: list[str]) -> bool:
    return bool(set(words) & {"options", "choices", "answers", "alternatives"})


def _is_link(words: list[str]) -> bool:
    return bool(set(words) & {"url", "uri", "link", "href"})


def _int(value: Any) -> int | None:
    return None if value is None else int(value)  # Gemini's schema may spell int64 as a string


def _clamp(want: int, lo: Any, hi: Any, default_max: int | None = None) -> int:
    low = _int(lo) or 0
    high = _int(hi) if hi is not None else default_max
    n = max(want, low, 1 if (high is None or high > 0) else 0)
    return min(n, high) if high is not None else n


def _formatted(fmt: str, words: list[str], index: int) -> str:
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


def _key_for(properties: dict[str, dict[str, Any]], hints: set[str]) -> str | None:
    """The first free-text field whose name carries one of ``hints``."""
    return next((k for k, v in properties.items() if _is_text(v) and set(_words(k)) & hints), None)


def _is_picture(hints: set[str], ctx: Any) -> bool:
    return "image" in hints or ctx.parent in ("picture", "image", "illustration", "figure")


def _shorten(text: str, hi: int, lo: int | None) -> str:
    """``text`` cut to ``hi`` characters: at the last sentence end that fits, else at a word."""
    cut = text[:hi]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", cut)]
    if ends and (lo is None or ends[-1] >= lo):
        return cut[: ends[-1]]
    shorter = cut.rsplit(" ", 1)[0].rstrip(",;:") if " " in cut.strip() else cut
    return shorter if shorter and (lo is None or len(shorter) >= lo) else cut
