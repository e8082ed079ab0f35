"""The iOS app's decoding rules (../shared/client-contract.md), as checks on response bodies.

Each ``decode_*`` raises AssertionError where the app's decoder would fail:
a missing required key or a wrong type. Optional keys are checked only for
type when present. Extra keys are allowed (the app ignores them).
"""
from __future__ import annotations

import uuid
from datetime import datetime

BLOCK_TYPES = {"heading", "paragraph", "image", "quizHeading", "multipleChoiceQuestion", "error"}
LEVELS = {"beginner", "moderate", "intermediate"}


def _is(value, kind, where):
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    assert ok, (
        f"{where}: expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}: "
        f"{value!r}"
    )


def required(obj, key, kind, where=""):
    assert isinstance(obj, dict), f"{where}: expected an object"
    assert key in obj and obj[key] is not None, f"{where}.{key} is required"
    _is(obj[key], kind, f"{where}.{key}")
    return obj[key]


def optional(obj, key, kind, where=""):
    if obj.get(key) is not None:
        _is(obj[key], kind, f"{where}.{key}")
    return obj.get(key)


def iso8601(value, where):
    _is(value, str, where)
    datetime.fromisoformat(value.replace("Z", "+00:00"))


def decode_health(body):
    required(body, "status", str, "health")
    required(body, "message", str, "health")
    for key, kind in (
        ("memory_usage_mb", float),
        ("memory_warning", bool),
        ("memory_critical", bool),
        ("timestamp", str),
    ):
        required(body, key, kind, "health")


def decode_comic(body):
    required(body, "success", bool, "ComicResponse")
    required(body, "request_id", str, "ComicResponse")
    iso8601(required(body, "timestamp", str, "ComicResponse"), "ComicResponse.timestamp")
    optional(body, "error", str, "ComicResponse")
    comic = optional(body, "comic", dict, "ComicResponse")
    if comic is None:
        return body
    required(comic, "comic_title", str, "comic")
    required(comic, "theme", str, "comic")
    guide = required(comic, "character_style_guide", dict, "comic")
    for name, description in guide.items():
        _is(description, str, f"comic.character_style_guide.{name}")
    for i, panel in enumerate(required(comic, "panel_layout", list, "comic")):
        where = f"comic.panel_layout[{i}]"
        required(panel, "panel_id", int, where)
        required(panel, "scene", str, where)
        required(panel, "image_prompt", str, where)
        dialogue = optional(panel, "dialogue", dict, where) or {}
        for speaker, line in dialogue.items():
            _is(line, str, f"{where}.dialogue.{speaker}")
        optional(panel, "image_url", str, where)
    return body


def decode_image(body):
    assert isinstance(body.get("url"), str) or isinstance(body.get("image_url"), str), (
        "image: url missing"
    )
    return body


def decode_story(body):
    required(body, "request_id", str, "story response")
    story = required(body, "story", dict, "story response")
    required(story, "title", str, "story")
    required(story, "content", str, "story")
    assert required(story, "level", str, "story") in LEVELS, (
        "story.level must be one of the three levels"
    )
    for i, chapter in enumerate(required(story, "chapters", list, "story")):
        where = f"story.chapters[{i}]"
        required(chapter, "id", str, where)
        required(chapter, "title", str, where)
        required(chapter, "content", str, where)
        required(chapter, "order", int, where)
        assert "imageUrl" in chapter, f"{where}.imageUrl must be present (string or null)"
        optional(chapter, "imageUrl", str, where)
    optional(story, "imageStyle", str, "story")
    optional(story, "coverImageUrl", str, "story")
    optional(story, "summaryImageUrl", str, "story")
    for i, character in enumerate(optional(story, "mainCharacters", list, "story") or []):
        where = f"story.mainCharacters[{i}]"
        required(character, "name", str, where)
        for key in ("description", "personality", "imageUrl"):
            optional(character, key, str, where)
    return body


def decode_lecture(body):
    required(body, "lecture_id", str, "LectureResponse")
    optional(body, "error", str, "LectureResponse")
    optional(body, "request_id", str, "LectureResponse")
    lecture = optional(body, "lecture", dict, "LectureResponse")
    sections = None
    if lecture is not None:
        required(lecture, "title", str, "lecture")
        sections = required(lecture, "sections", list, "lecture")
        for i, section in enumerate(sections):
            where = f"lecture.sections[{i}]"
            for key in ("title", "script", "image_prompt"):
                required(section, key, str, where)
            optional(section, "image_url", str, where)
    for i, audio in enumerate(optional(body, "audio_files", list, "LectureResponse") or []):
        where = f"audio_files[{i}]"
        assert required(audio, "type", str, where) in {"title", "section_title", "section_script"}
        for key in ("text", "url", "filename"):
            required(audio, key, str, where)
        section = optional(audio, "section", int, where)
        if audio["type"] == "title":
            assert section is None, f"{where}: the title clip has no section"
        else:
            # The app does sections[section - 1]: 0 would index -1 and crash it.
            assert section is not None, f"{where}.section is missing"
            assert sections is None or 1 <= section <= len(sections), (
                f"{where}.section {section} is not in 1..{len(sections)}"
            )
    return body


def decode_blocks(body):
    required(body, "request_id", str, "process response")
    for i, block in enumerate(required(body, "blocks", list, "process response")):
        where = f"blocks[{i}]"
        uuid.UUID(required(block, "id", str, where))
        kind = required(block, "type", str, where)
        assert kind in BLOCK_TYPES, f"{where}.type {kind!r} would break decoding"
        required(block, "content", str, where)
        if kind == "image":
            required(block, "url", str, where)
            required(block, "alt", str, where)
        if kind == "multipleChoiceQuestion":
            options = required(block, "options", list, where)
            ids = [required(option, "id", str, f"{where}.options") for option in options]
            for option in options:
                required(option, "text", str, f"{where}.options")
            assert required(block, "correctAnswerID", str, where) in ids, (
                f"{where}: correctAnswerID not an option"
            )
            required(block, "explanation", str, where)
    return body


def decode_dialogue(body):
    required(body, "dialogue_response", str, "dialogue")
    return body


def decode_explain_again(body):
    required(body, "re_explained_paragraph", str, "explain again")
    return body


def decode_flashcards(body):
    for i, card in enumerate(required(body, "flashcards", list, "flashcards")):
        required(card, "front", str, f"flashcards[{i}]")
        required(card, "back", str, f"flashcards[{i}]")
    return body


def decode_slides(body):
    for i, slide in enumerate(required(body, "slides", list, "slides")):
        required(slide, "title", str, f"slides[{i}]")
        for line in required(slide, "content", list, f"slides[{i}]"):
            _is(line, str, f"slides[{i}].content[]")
    return body


def decode_progress(body):
    required(body, "success", bool, "progress")
    required(body, "step", str, "progress")
    required(body, "step_number", int, "progress")
    required(body, "total_steps", int, "progress")
    required(body, "details", str, "progress")
    required(body, "last_updated", str, "progress")
    required(body, "progress_percentage", float, "progress")
    required(body, "request_id", str, "progress")
    required(body, "timestamp", str, "progress")
    return body


def decode_tts(body):
    for key in ("audio_url", "voice", "model"):
        required(body, key, str, "tts")
    optional(body, "text_length", int, "tts")
    return body


def decode_error(body):
    """Every error: a sentence and a stable code, and nothing that looks like a traceback."""
    required(body, "error", str, "error")
    required(body, "code", str, "error")
    text = repr(body)
    for leak in ("Traceback", 'File "', "Exception", "/work/", "site-packages"):
        assert leak not in text, f"error body leaks {leak!r}: {body}"
    return body
