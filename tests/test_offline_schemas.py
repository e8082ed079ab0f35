"""The offline provider answers any schema a generation author may write, within its constraints.

Hypothesis writes the schemas: pydantic models of strings, numbers, flags,
Literals, Enums, lists, optionals and nested models, with length and range
constraints and field names that trigger the filler's hints (titles,
questions with options and a correct answer, names, ids, links...). Every
answer must validate; the Gemini path (real SDK, loopback server filling the
SDK's converted schema) must too.
"""
from __future__ import annotations

import enum
import itertools
from typing import Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model

from liroo.providers import Pair
from liroo.providers.gemini import GeminiProvider
from liroo.providers.offline import OfflineProvider
from liroo.providers.schema import check_schema
from tests.fake_gemini import FakeGemini
from tests.helpers.bodies import PROMPT, STORY
from tests.helpers.gemini import gemini_settings

HINTED_NAMES = [
    "title",
    "name",
    "question",
    "options",
    "correct_answer",
    "correct_answer_id",
    "id",
    "content",
    "image_prompt",
    "image_url",
    "speaker",
    "tags",
    "order",
    "score",
    "explanation",
    "text",
    "value",
    "key",
    "items",
    "level",
    "is_correct",
    "choices",
    "summary",
    "panel_id",
    "keywords",
    "label",
]
_counter = itertools.count()


def _fresh(prefix: str) -> str:
    return f"{prefix}{next(_counter)}"


def bounded(kind):
    """(low, high) with low <= high, either possibly absent."""
    return st.tuples(st.one_of(st.none(), kind), st.one_of(st.none(), kind)).map(
        lambda b: (b[0], b[1]) if None in b or b[0] <= b[1] else (b[1], b[0])
    )


strings = bounded(st.integers(0, 90)).map(lambda b: (str, Field(min_length=b[0], max_length=b[1])))
integers = bounded(st.integers(-50, 50)).map(lambda b: (int, Field(ge=b[0], le=b[1])))
floats = bounded(st.floats(-10, 10, allow_nan=False)).map(
    lambda b: (float, Field(ge=b[0], le=b[1]))
)
flags = st.just((bool, Field()))
literals = st.lists(
    st.sampled_from(["red", "green", "blue", "calm", "tense"]), min_size=1, max_size=4, unique=True
).map(lambda vs: (Literal[tuple(vs)], Field()))
enums = st.lists(
    st.sampled_from(["beginner", "moderate", "intermediate", "x"]),
    min_size=1,
    max_size=3,
    unique=True,
).map(lambda vs: (enum.Enum(_fresh("E"), {v: v for v in vs}, type=str), Field()))
pairs = st.just((list[Pair], Field()))
leaves = st.one_of(strings, integers, floats, flags, literals, enums, pairs)


def models(children):
    fields = st.dictionaries(
        st.one_of(
            st.sampled_from(HINTED_NAMES),
            st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True).filter(
                lambda n: not n.startswith("model_")
            ),
        ),
        children,
        min_size=1,
        max_size=6,
    )
    return fields.map(lambda f: (create_model(_fresh("M"), **f), Field()))


def lists(children):
    return st.tuples(children, bounded(st.integers(0, 6))).map(
        lambda c: (list[c[0][0]], Field(min_length=c[1][0], max_length=c[1][1]))
    )


def optionals(children):
    return children.map(lambda c: (Optional[c[0]], Field(default=None)))


field_types = st.recursive(
    leaves,
    lambda children: st.one_of(models(children), lists(children), optionals(children)),
    max_leaves=12,
)
schemas = models(field_types).map(lambda m: m[0])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(schemas)
def test_offline_answers_validate_for_any_supported_schema(schema):
    check_schema(schema)
    result = OfflineProvider().generate_structured(PROMPT, schema)
    assert isinstance(result, schema)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(schemas)
def test_gemini_through_the_sdk_validates_for_any_supported_schema(schema):
    with FakeGemini() as fake:
        provider = GeminiProvider(gemini_settings(fake))
        try:
            assert isinstance(provider.generate_structured(PROMPT, schema), schema)
        finally:
            provider.close()


class Node(BaseModel):
    label: str
    children: list["Node"] = Field(default_factory=list)
    parent: Optional["Node"] = None


def test_self_referencing_models_stop_growing():
    tree = OfflineProvider().generate_structured(PROMPT, Node)
    depth, node = 0, tree
    while node.children:
        node, depth = node.children[0], depth + 1
    assert 1 <= depth <= 10


class QuizOption(BaseModel):
    id: str
    text: str


class QuizFirstTheAnswer(BaseModel):
    correct_answer_id: str  # before the options it names: the filler writes the options first
    question: str
    options: list[QuizOption]


def test_a_correct_id_written_before_the_options_names_the_right_option():
    quiz = OfflineProvider().generate_structured(PROMPT, QuizFirstTheAnswer)
    assert [name for name in quiz.model_dump()] == ["correct_answer_id", "question", "options"]
    right = next(option for option in quiz.options if option.id == quiz.correct_answer_id)
    blank = quiz.question.removeprefix("Fill in the blank: ")
    assert "_____" in blank and blank.replace("_____", right.text, 1) in " ".join(STORY.split())
