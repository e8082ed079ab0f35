"""How request texts are counted and cleaned (liroo/api/models.py): pure rules, no server."""

from __future__ import annotations

import pytest

from liroo.api.models import ComicRequest, TtsRequest, grapheme_count
from liroo.settings import Settings

SETTINGS = Settings(max_input_chars=40, max_long_text_chars=50)


def comic(text: str) -> ComicRequest:
    return ComicRequest.model_validate({"text": text}, context={"settings": SETTINGS})


def error_type(model, body: dict) -> str:
    with pytest.raises(Exception) as caught:
        model.model_validate(body, context={"settings": SETTINGS})
    return caught.value.errors()[0]["type"]


@pytest.mark.parametrize(
    "text, count",
    [
        ("hello", 5),
        ("e\u0301te\u0301", 3),  # two of the three letters carry a combining accent
        ("\U0001f44d\U0001f3fd", 1),  # a thumbs-up with a skin tone
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", 1),  # a family: one ZWJ sequence
        ("\U0001f1eb\U0001f1f7", 1),  # a flag: two regional indicators
        ("\r\n", 1),
    ],
)
def test_characters_are_counted_as_the_app_counts_them(text, count):
    assert grapheme_count(text) == count


def test_a_text_at_the_limit_in_graphemes_is_accepted_though_longer_in_code_points():
    text = "e\u0301" * 40  # 40 characters for a person and for Swift's String.count, 80 code points
    assert comic(text).text == text


def test_a_text_over_the_limit_in_graphemes_is_refused():
    assert error_type(ComicRequest, {"text": "e\u0301" * 41}) == "text_too_long"
    assert error_type(TtsRequest, {"text": "a" * 51}) == "text_too_long"


@pytest.mark.parametrize(
    "text",
    ["\u200b\u200c\u2060", "\x00\x00", "\U0001f389\U0001f680", " \u200b\x00\u2728 ", "!?."],
)
def test_a_text_with_no_letter_or_digit_is_empty(text):
    assert error_type(ComicRequest, {"text": text}) == "empty_text"


def test_control_characters_are_removed_and_tabs_and_newlines_kept():
    assert comic("Plants\x00 grow\x07.\n\tThey drink.").text == "Plants grow.\n\tThey drink."


def test_emoji_and_zero_width_joiners_inside_words_are_kept():
    text = "The fox \U0001f98a ran; \U0001f468\u200d\U0001f469 watched."
    assert comic(text).text == text


def test_a_number_alone_is_something_to_read():
    assert comic("1789").text == "1789"
