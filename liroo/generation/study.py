"""/process: the study page (blocks with pictures and a quiz), and its dialogue, explain-again,
flashcard and slideshow modes. One structured call each; no parsing of model prose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from ..providers.base import BadOutput
from .context import Context
from .images import ImageJob, ImageOutcome
from .options import LEVEL_GUIDANCE, NO_TEXT_IN_PICTURE, style_name, style_phrase
from .pipeline import ScriptSteps, draw, script_written, write_script
from .results import (
    AnswerOption,
    BlocksResult,
    DialogueResult,
    ExplainAgainResult,
    Flashcard,
    FlashcardsResult,
    HeadingBlock,
    ImageBlock,
    ParagraphBlock,
    QuestionBlock,
    QuizHeadingBlock,
    Slide,
    SlidesResult,
)
from .script_fields import items, picture_brief

MIN_QUESTIONS, MAX_QUESTIONS = 3, 5
MAX_IMAGES = 2
HISTORY_TURNS = 20  # the latest turns of a conversation that go into the prompt
PLAIN_PICTURE_STYLE = "clear, friendly educational illustration with simple shapes and soft colours"


@dataclass(frozen=True)
class Learner:
    """Who reads: what shapes the writing of every mode."""

    level: str
    interests: list[str] = field(default_factory=list)
    self_described_level: str | None = None  # the profile's studentLevel, free text
    tier: str | None = None  # summarization_tier, e.g. "Detailed Explanation"

    def guidance(self) -> str:
        lines = [f"Reading level: {self.level}. {LEVEL_GUIDANCE[self.level]}"]
        if self.self_described_level:
            lines.append(f"The student describes their level as: {self.self_described_level}.")
        if self.interests:
            lines.append(
                f"The student is interested in: {', '.join(self.interests)}. Where it helps, draw "
                "examples and comparisons from these interests, without changing the facts."
            )
        if self.tier:
            lines.append(f"Depth requested: {self.tier}.")
        return "\n".join(lines)


def _source(text: str) -> str:
    return f"<source>\n{text}\n</source>"


# --- the study page
# ------------------------------------------------------------------------------------


class StudySection(BaseModel):
    heading: str
    paragraphs: list[str] = items(1, 4)


class StudyPicture(BaseModel):
    description: str = picture_brief("What the picture shows, for an illustrator.")
    alt: str = Field(
        description="A one-sentence alternative text for readers who cannot see the picture."
    )


class StudyQuestion(BaseModel):
    question: str
    options: list[str] = items(2, 5)
    correct_option_index: int = Field(
        ge=0, description="0-based index of the right answer in options."
    )
    explanation: str = Field(description="Why that answer is right, in one or two sentences.")


class StudyPage(BaseModel):
    title: str
    sections: list[StudySection] = items(1, 6)
    pictures: list[StudyPicture] = items(1, MAX_IMAGES)
    quiz_title: str
    questions: list[StudyQuestion] = items(MIN_QUESTIONS, MAX_QUESTIONS)


def study_page_prompt(text: str, learner: Learner) -> str:
    return (
        "Turn the student's text below into a study page: a title, sections with a heading and "
        "short "
        f"paragraphs that explain the text, 1 or {MAX_IMAGES} pictures that help understanding, "
        "and a quiz of "
        f"{MIN_QUESTIONS} to {MAX_QUESTIONS} multiple-choice questions on the text's key facts "
        "(each with one right answer among 3 or 4 options).\n"
        f"{learner.guidance()}\nKeep every fact of the text accurate.\n\n"
        f"Student's text:\n{_source(text)}"
    )


def _question_block(question: StudyQuestion) -> QuestionBlock | None:
    """The app's question, with our own option ids; None if the model's answer index is not an
    option."""
    options = [AnswerOption(text=text) for text in question.options if text.strip()]
    if len(options) != len(question.options) or not 0 <= question.correct_option_index < len(
        options
    ):
        return None
    return QuestionBlock(
        content=question.question,
        options=options,
        correctAnswerID=options[question.correct_option_index].id,
        explanation=question.explanation,
    )


# a step for the page, each picture and the answer
STUDY_STEPS = ScriptSteps(StudyPage, "Writing the study page", "Study page written")


def generate_study_page(
    ctx: Context, text: str, learner: Learner, style: str | None
) -> BlocksResult:
    page = write_script(ctx, STUDY_STEPS, study_page_prompt(text, learner), MAX_IMAGES)
    questions = [block for block in map(_question_block, page.questions[:MAX_QUESTIONS]) if block]
    if len(questions) < MIN_QUESTIONS:
        raise BadOutput(f"only {len(questions)} usable quiz questions")
    pictures = page.pictures[:MAX_IMAGES]
    script_written(ctx, STUDY_STEPS, page.title, len(pictures))

    look = f"{style_name(style)}: {style_phrase(style)}" if style else PLAIN_PICTURE_STYLE
    jobs = [
        ImageJob(
            prompt=f"{picture.description}\nStyle: {look}. Suitable for a {learner.level} reader. "
            f"{NO_TEXT_IN_PICTURE}",
            cache_parts=(style or "study", learner.level),
            aspect_ratio="4:3",
            label=f"picture {i}",
        )
        for i, picture in enumerate(pictures, 1)
    ]
    outcomes = draw(ctx, jobs)  # the page keeps whatever pictures were drawn
    blocks = _page_blocks(page, pictures, outcomes) + [QuizHeadingBlock(content=page.quiz_title)]
    errors = [o.error_code for o in outcomes if not o.url]
    ctx.progress.advance(
        "Study page ready", f"{len(outcomes) - len(errors)} of {len(outcomes)} pictures drawn"
    )
    return BlocksResult(
        blocks=blocks + questions, provider=ctx.provider.name, image_errors=errors or None
    )


def _page_blocks(
    page: StudyPage, pictures: list[StudyPicture], outcomes: list[ImageOutcome]
) -> list:
    """The title, then each section's heading and paragraphs; the first picture follows the
    first section, the second the last one (before the quiz)."""
    after_section: dict[int, list[ImageBlock]] = {}
    for index, (picture, outcome) in enumerate(zip(pictures, outcomes, strict=True)):
        # a picture that failed is left out: an image block without a url breaks the app
        if outcome.url:
            slot = 0 if index == 0 else len(page.sections) - 1
            after_section.setdefault(slot, []).append(
                ImageBlock(content=picture.alt, url=outcome.url, alt=picture.alt)
            )
    blocks: list = [HeadingBlock(content=page.title)]
    for number, section in enumerate(page.sections):
        blocks.append(HeadingBlock(content=section.heading))
        blocks.extend(
            ParagraphBlock(content=paragraph)
            for paragraph in section.paragraphs
            if paragraph.strip()
        )
        blocks.extend(after_section.get(number, []))
    return blocks


# --- the other modes: one call, one answer
# ----------------------------------------------------------------


class DialogueAnswer(BaseModel):
    answer: str = Field(description="The tutor's reply to the student's question.")


class ReExplanation(BaseModel):
    paragraph: str = Field(description="The paragraph explained again, differently.")


class FlashcardScript(BaseModel):
    front: str = Field(description="A short question, term or cue.")
    back: str = Field(description="The answer or definition.")


class FlashcardSet(BaseModel):
    cards: list[FlashcardScript] = items(3, 12)


class SlideScript(BaseModel):
    title: str
    points: list[str] = items(1, 6)


class Slideshow(BaseModel):
    slides: list[SlideScript] = items(2, 10)


@dataclass(frozen=True)
class Conversation:
    question: str
    snippet: str | None = None
    block: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)  # (sender "user"|"ai", text)


def dialogue_prompt(talk: Conversation, learner: Learner) -> str:
    parts = [
        "You are a patient tutor helping a student with a text they are reading. Answer the "
        "student's question clearly and kindly, in a few sentences, staying with the text's facts.",
        learner.guidance(),
    ]
    if talk.block:
        parts.append(f"The passage being read:\n{_source(talk.block)}")
    if talk.snippet:
        parts.append(f'The part the student selected: "{talk.snippet}"')
    if talk.history:
        turns = "\n".join(
            f"{'Student' if sender == 'user' else 'Tutor'}: {text}"
            for sender, text in talk.history[-HISTORY_TURNS:]
        )
        parts.append(f"The conversation so far:\n{turns}")
    parts.append(f"The student's question: {talk.question}")
    return "\n\n".join(parts)


def explain_again_prompt(paragraph: str, learner: Learner) -> str:
    return (
        "The student did not understand the paragraph below. Explain it again in a different way: "
        "simpler words, a concrete example or comparison, the same facts. Answer with one "
        "paragraph.\n"
        f"{learner.guidance()}\n\nParagraph:\n{_source(paragraph)}"
    )


def flashcards_prompt(text: str, learner: Learner) -> str:
    return (
        "Make flashcards for studying the student's text below: each card has a short question, "
        "term or cue on the front and a clear answer or definition on the back. Cover the text's "
        "key facts.\n"
        f"{learner.guidance()}\n\nStudent's text:\n{_source(text)}"
    )


def slideshow_prompt(text: str, learner: Learner) -> str:
    return (
        "Make a slideshow that teaches the student's text below: each slide has a title and a few "
        "short bullet points, in a sensible teaching order.\n"
        f"{learner.guidance()}\n\nStudent's text:\n{_source(text)}"
    )


def _one_call(ctx: Context, step: str, prompt: str, schema):
    ctx.progress.plan(1, step)
    answer = ctx.provider.generate_structured(prompt, schema)
    ctx.progress.advance("Done")
    return answer


def generate_dialogue(ctx: Context, talk: Conversation, learner: Learner) -> DialogueResult:
    answer = _one_call(
        ctx, "Thinking about the question", dialogue_prompt(talk, learner), DialogueAnswer
    )
    return DialogueResult(dialogue_response=answer.answer, provider=ctx.provider.name)


def generate_explain_again(ctx: Context, paragraph: str, learner: Learner) -> ExplainAgainResult:
    answer = _one_call(
        ctx, "Explaining again", explain_again_prompt(paragraph, learner), ReExplanation
    )
    return ExplainAgainResult(re_explained_paragraph=answer.paragraph, provider=ctx.provider.name)


def generate_flashcards(ctx: Context, text: str, learner: Learner) -> FlashcardsResult:
    cards = _one_call(ctx, "Writing flashcards", flashcards_prompt(text, learner), FlashcardSet)
    return FlashcardsResult(
        flashcards=[Flashcard(front=c.front, back=c.back) for c in cards.cards],
        provider=ctx.provider.name,
    )


def generate_slides(ctx: Context, text: str, learner: Learner) -> SlidesResult:
    show = _one_call(ctx, "Writing slides", slideshow_prompt(text, learner), Slideshow)
    return SlidesResult(
        slides=[Slide(title=s.title, content=s.points) for s in show.slides],
        provider=ctx.provider.name,
    )
