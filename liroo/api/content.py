"""POST /generate_story, /process (five modes), /generate_lecture and /generate_tts."""

from __future__ import annotations

from flask import Blueprint

from .. import routes
from ..error_answer import ApiError
from ..generation.lecture import generate_lecture
from ..generation.options import level_key
from ..generation.speech import generate_tts
from ..generation.story import generate_story, story_brief
from ..generation.study import (
    Conversation,
    Learner,
    generate_dialogue,
    generate_explain_again,
    generate_flashcards,
    generate_slides,
    generate_study_page,
)
from .models import ProcessRequest, has_words
from .runner import parse_body, run_generation

bp = Blueprint("content", __name__)


@routes.STORY.view(bp)
def story():
    body = parse_body(routes.STORY.request)
    brief = story_brief(
        body.text,
        level=body.level,
        style=body.image_style,
        genre=body.genre,
        main_character=body.main_character,
    )
    if not has_words(brief.text):
        raise ApiError(
            422,
            "empty_text",
            "The story prompt has no original text to tell a story from.",
            field="text",
        )
    return run_generation(body, lambda ctx: generate_story(ctx, brief).body())


_MODE_NAMES = {
    "dialogue": "dialogue mode",
    "explain_again": "explain-again mode",
    "flashcards": "flashcards",
    "slideshow": "a slideshow",
    "blocks": "a study page",
}


def _learner(body: ProcessRequest) -> Learner:
    """Who reads, from the level and the app's profile (whose studentLevel is used when no level is
    sent)."""
    profile = body.profile
    described = profile.studentLevel if profile else None
    profile_level = level_key(described) if described else None
    level = profile_level if profile_level and "level" not in body.model_fields_set else body.level
    interests = [
        topic.strip() for topic in (profile.topicsOfInterest if profile else []) if topic.strip()
    ]
    return Learner(
        level=level,
        interests=interests,
        tier=body.summarization_tier,
        self_described_level=None if profile_level else described,
    )


@routes.STUDY.view(bp)
def process():
    body = parse_body(routes.STUDY.request)
    needed = body.required_field
    value = getattr(body, needed)
    if value is None or not has_words(value):
        if needed in body.model_fields_set:  # sent, but blank or without a word
            raise ApiError(
                422, "empty_text", f"The field '{needed}' must not be empty.", field=needed
            )
        raise ApiError(
            400,
            "missing_field",
            f"The field '{needed}' is required for {_MODE_NAMES[body.mode]}.",
            field=needed,
        )
    learner = _learner(body)

    def work(ctx):
        if body.mode == "dialogue":
            talk = Conversation(
                question=body.user_question,
                snippet=body.selected_text_snippet,
                block=body.original_block_content,
                history=[(turn.sender, turn.text) for turn in body.conversation_history],
            )
            return generate_dialogue(ctx, talk, learner).body()
        if body.mode == "explain_again":
            return generate_explain_again(ctx, body.original_paragraph_text, learner).body()
        if body.mode == "flashcards":
            return generate_flashcards(ctx, body.input_text, learner).body()
        if body.mode == "slideshow":
            return generate_slides(ctx, body.input_text, learner).body()
        return generate_study_page(ctx, body.input_text, learner, body.image_style).body()

    return run_generation(body, work)


@routes.LECTURE.view(bp)
def lecture():
    # The id every answer of this request carries, errors and the 202 included.
    lecture_id = routes.answer_fields()["lecture_id"]
    body = parse_body(routes.LECTURE.request)
    return run_generation(
        body,
        lambda ctx: generate_lecture(
            ctx, lecture_id, body.text, body.level, body.image_style
        ).body(),
    )


@routes.SPEECH.view(bp)
def tts():
    body = parse_body(routes.SPEECH.request)
    return run_generation(body, lambda ctx: generate_tts(ctx, body.text, body.voice).body())
