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
sections), each item's text fields written from its own share; a list of
objects with a ``name``/``speaker`` field is the cast (a teacher and a student,
or the people the text names), and with a ``line`` field too, a panel's
question and answer; ``title``-like fields get a whole noun phrase,
``theme``/``overview`` one sentence about the whole, ``image_prompt`` the
moment and its setting, ``tags``/``keywords`` nouns of the text; an object
with a ``question`` and ``options`` becomes a fill-in-the-blank question whose
``correct...`` field points at the right option. Deterministic: the same text
and schema always give the same answer.

What is written (offline_write.py), what is read from the text
(offline_text.py) and how schema nodes are read (offline_nodes.py) live
beside; this module walks the schema and decides which piece a field gets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .offline_nodes import (
    as_int,
    bound,
    clamp,
    formatted,
    is_link,
    is_options,
    is_text,
    key_for,
    option_id_key,
    shorten,
    singular_of,
    snake_to_camel,
    type_of,
    words_of,
)
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
        node = {snake_to_camel(k): v for k, v in (schema or {}).items()}
        for _ in range(32):  # nested $ref chains
            ref = node.pop("$ref", None)
            if ref is None:
                break
            target = self.defs.get(ref.rsplit("/", 1)[-1], {})
            node = {**{snake_to_camel(k): v for k, v in target.items()}, **node}
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
            if type_of(resolved) != "null":
                return self.non_null(resolved)
        return {"type": "null"}

    # --- values ----------------------------------------------------------
    def value(self, schema: Any, name: str, ctx: _Context) -> Any:
        node = self.resolve(schema)
        words = words_of(name)
        arms = node.get("anyOf") or node.get("oneOf")
        nullable = bool(node.get("nullable")) or bool(
            arms and any(type_of(self.resolve(a)) == "null" for a in arms)
        )
        if nullable and (is_link(words) or ctx.depth >= MAX_DEPTH):
            return None  # no links offline: the API fills them once media exists
        node = self.non_null(node)
        if "const" in node:
            return node["const"]
        if node.get("enum"):
            return node["enum"][ctx.index % len(node["enum"])]
        kind = type_of(node)
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
        inner = replace(ctx, parent=singular_of(name) or ctx.parent, depth=ctx.depth + 1)
        if ctx.person is None and any(set(words_of(k)) & _NAME_HINTS for k in properties):
            cast = self.writer.cast()  # an object with a name is a person of the piece
            inner = replace(inner, person=cast[ctx.index % len(cast)])
        if ctx.quiz is None:  # a new quiz, if this object is one: its right option is not known yet
            inner = replace(inner, quiz=self._quiz_for(properties, ctx), correct_id=None)
        result: dict[str, Any] = {}
        if inner.quiz is not None:
            # A quiz's options are written before its other fields, whatever the order: a "correct"
            # field names the right option's id, which exists only once the options do.
            for key in order:
                if is_options(words_of(key)):
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
        id_key = option_id_key(self.non_null(self.resolve(node.get("items") or {})))
        index = ctx.quiz.correct_index
        if id_key is None or not isinstance(options, list) or index >= len(options):
            return None
        option = options[index]
        return option.get(id_key) if isinstance(option, dict) else None

    def _quiz_for(self, properties: dict[str, Any], ctx: _Context) -> Quiz | None:
        options_key = next((k for k in properties if is_options(words_of(k))), None)
        if options_key is None or not any("question" in words_of(k) for k in properties):
            return None
        self.quizzes += 1
        options = self.non_null(self.resolve(properties[options_key]))
        option = self.non_null(self.resolve(options.get("items")))
        if type_of(options) != "array" or not (is_text(option) or type_of(option) == "object"):
            return None
        n = clamp(4, options.get("minItems"), options.get("maxItems"))
        return Quiz(self.writer, ctx.window.take(), n, self.quizzes)

    def array(self, node: dict[str, Any], name: str, ctx: _Context) -> list[Any]:
        items = node.get("items") or {}
        lo, hi = node.get("minItems"), node.get("maxItems")
        item_node = self.non_null(self.resolve(items))
        singular, words = singular_of(name), words_of(name)
        if ctx.depth >= MAX_DEPTH:
            return [
                self.value(items, singular, replace(ctx, index=i)) for i in range(as_int(lo) or 0)
            ]
        if node.get("prefixItems"):
            return [
                self.value(p, singular, replace(ctx, index=i))
                for i, p in enumerate(node["prefixItems"])
            ]
        free = type_of(item_node) == "object" or is_text(item_node)
        if ctx.quiz is not None and is_options(words) and free:
            return self._options(items, item_node, singular, ctx, lo, hi)
        if type_of(item_node) == "object":
            return self._objects(items, item_node, singular, ctx, lo, hi)
        if set(words) & _WORD_LIST_HINTS and is_text(item_node):
            return self._word_list(item_node, ctx, lo, hi)
        return self._plain(node, items, singular, words, ctx)

    def _objects(
        self, items: Any, item_node: dict[str, Any], singular: str, ctx: _Context, lo: Any, hi: Any
    ) -> list[Any]:
        """A list of objects: people (a cast, who says what), or the text shared among them in
        order (panels, chapters, sections)."""
        keys = [set(words_of(k)) for k in item_node.get("properties") or {}]
        if any(k & _NAME_HINTS for k in keys):
            if any(k & _LINE_HINTS for k in keys):
                return self._dialogue(items, item_node, singular, ctx, lo, hi)
            return self._people(items, singular, ctx, lo, hi)
        # the prompt's "exactly N panels" sizes the piece's main list, as many as the text allows
        want = len(ctx.window.items)
        if ctx.depth <= 1 and self.writer.ask.count:
            want = min(want, self.writer.ask.count)
        n = clamp(want, lo, hi, default_max=max(DEFAULT_LIST_LENGTH, want))
        return [
            self.value(items, singular, replace(ctx, window=part, index=i, quiz=None))
            for i, part in enumerate(ctx.window.split(n))
        ]

    def _word_list(self, item_node: dict[str, Any], ctx: _Context, lo: Any, hi: Any) -> list[str]:
        n = clamp(min(len(self.keywords), 5), lo, hi)
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
        want = 4 if is_options(words) else min(len(ctx.window.items), 3)
        n = clamp(want, node.get("minItems"), node.get("maxItems"))
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
        n = clamp(len(named), lo, hi, default_max=DEFAULT_LIST_LENGTH)
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
        n = clamp(len(lines), lo, hi)
        properties = self._properties(item_node)
        speaker_key = key_for(properties, _NAME_HINTS)
        line_key = key_for(properties, _LINE_HINTS)
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
        n = clamp(len(quiz.options), lo, hi)
        texts = [quiz.options[i % len(quiz.options)] for i in range(n)]
        if type_of(item_node) != "object":
            return [self._fit(text, item_node, ctx) for text in texts]
        properties = self._properties(item_node)
        text_key = key_for(properties, _OPTION_TEXT_HINTS)
        flag_key = next(
            (
                k
                for k, v in properties.items()
                if type_of(v) == "boolean" and "correct" in words_of(k)
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
            return formatted(fmt, [ctx.parent, *words], ctx.index)
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
        hints, last, window = set(words), (words[-1] if words else ""), ctx.window
        if last == "id":
            return f"{words[-2] if len(words) > 1 else ctx.parent}-{ctx.index + 1}"
        if is_link(words):
            return f"offline:{ctx.parent}/{ctx.index + 1}"
        if "prompt" in hints or (hints & {"description", "idea"} and _is_picture(hints, ctx)):
            return self.writer.picture(window.items)
        if "alt" in hints:
            return self.writer.alt(window.items)
        if "question" in hints:
            return f"What does the text tell us about {self.writer.heading_free(window.items)}?"
        return self._person_text(hints, ctx) or self._prose_text(hints, ctx)

    def _person_text(self, hints: set[str], ctx: _Context) -> str | None:
        """A person's name, look or character; None for a field that is not about a person."""
        writer = self.writer
        if hints & _NAME_HINTS:
            return ctx.person or writer.cast()[ctx.index % len(writer.cast())]
        if ctx.person and hints & {"description", "look", "appearance"}:
            return writer.look(ctx.person)
        if ctx.person and hints & {"personality", "traits", "character"}:
            return writer.personality(ctx.person)
        return None

    def _prose_text(self, hints: set[str], ctx: _Context) -> str:
        """Titles, summaries and passages: the window's sentences at the reader's level."""
        writer, window = self.writer, ctx.window
        if hints & _TITLE_HINTS:
            if ctx.depth <= 1:
                return writer.document_title(quiz="quiz" in hints)
            return writer.heading(window.items)
        if hints & _SUMMARY_HINTS and ctx.depth <= 1:
            return writer.summary(ctx.parent)
        if "content" in hints and writer.ask.mode == "story" and ctx.depth > 1:
            return writer.chapter(window.items, ctx.index)
        if "script" in hints and writer.ask.mode == "lecture":
            return writer.lecture_script(window.items, ctx.index)
        if hints & {"scene", "caption"}:  # a panel's caption: one or two sentences
            return writer.passage(window.items[:2])
        if hints & _LONG_TEXT_HINTS or ctx.person is None:
            explained = ctx.depth > 1 and bool(hints & {"paragraph", "content", "body"})
            return writer.passage(window.items, explained=explained)
        return writer.passage([window.take()])

    def _fit(self, text: str, node: dict[str, Any], ctx: _Context) -> str:
        """``text`` within minLength/maxLength: longer with the text's next sentences, shorter at a
        sentence's end (else a word's)."""
        lo, hi = as_int(node.get("minLength")), as_int(node.get("maxLength"))
        for _ in range(1000):
            if lo is None or len(text) >= lo:
                break
            more = next((s for s in ctx.window.items if s not in text), None)
            if more is None:
                more = self.sentences[self.padding % len(self.sentences)]
                self.padding += 1
            text = f"{text} {more}"
        if hi is not None and len(text) > hi:
            text = shorten(text, hi, lo)
        return text

    def number(
        self, node: dict[str, Any], words: list[str], ctx: _Context, *, integer: bool
    ) -> int | float:
        # Ids, orders, positions and counts alike: the item's place in its list, from 1.
        value: float = ctx.index + 1
        if ctx.quiz is not None and ("correct" in words or words[-1:] == ["answer"]):
            value = ctx.quiz.correct_index
        step = 1 if integer else 0.5
        lo = bound(node, "minimum", "exclusiveMinimum", +step)
        hi = bound(node, "maximum", "exclusiveMaximum", -step)
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


def _is_picture(hints: set[str], ctx: Any) -> bool:
    return "image" in hints or ctx.parent in ("picture", "image", "illustration", "figure")
