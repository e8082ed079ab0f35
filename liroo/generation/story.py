"""A story: the app's prompt read into a brief, one structured call for the script, then the
pictures.

The app sends its whole request as one prompt in ``text`` (see the client
contract): a ``[Level: ...]`` line, a genre sentence, an image style sentence,
``Original Text:``, an optional main-character sentence, then the student's
text. ``read_story_prompt`` finds each part and tolerates any of them missing
(plain text is all original text); fields sent directly win over the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from .context import Context
from .images import ImageJob, ImageOutcome
from .options import (
    LEVEL_GUIDANCE,
    NO_TEXT_IN_PICTURE,
    level_key,
    style_key,
    style_name,
    style_phrase,
)
from .pipeline import ScriptSteps, draw_at_least_half, script_written, write_script
from .results import Chapter, MainCharacter, PartialChapter, PartialCover, Story, StoryResult
from .script_fields import items, picture_brief

MIN_CHAPTERS, MAX_CHAPTERS = 2, 5
DEFAULT_LEVEL = "moderate"
DEFAULT_STYLE = "watercolor"
GENRES = ("Adventure", "Fantasy", "Mystery", "Science Fiction", "Historical", "Educational")
_GENRE_ALIASES = {"sci-fi": "Science Fiction", "scifi": "Science Fiction", "history": "Historical"}

_LEVEL_LINE = re.compile(r"^\[\s*level\s*:\s*(?P<value>[^\]]*?)\s*\]$", re.I)
_GENRE_SENTENCE = re.compile(
    r"^please convert the following text into "
    r"(?:an?\s+)?(?:engaging\s+)?(?P<value>.*?)\s*story\b.*$",
    re.I,
)
_STYLE_SENTENCE = re.compile(
    r"^image style to consider for tone and visuals\s*:\s*(?P<value>.*?)\s*\.?$", re.I
)
_ORIGINAL_TEXT = re.compile(r"^original text\s*:\s*(?P<rest>.*)$", re.I)
_MAIN_CHARACTER = re.compile(r"^the main character of this story is\s+(?P<value>.+?)\s*\.?$", re.I)


@dataclass(frozen=True)
class StoryPrompt:
    """What the app's prompt says; None where it says nothing (or nothing usable)."""

    text: str
    level: str | None = None
    genre: str | None = None
    style: str | None = None
    main_character: str | None = None


def genre_name(value: str | None) -> str | None:
    """The app's display name for a genre in any case ('science fiction' -> 'Science Fiction');
    another genre is kept as written, in title case."""
    value = " ".join((value or "").split())
    if not value:
        return None
    for name in GENRES:
        if value.lower() == name.lower():
            return name
    return _GENRE_ALIASES.get(value.lower(), value.title())


def read_story_prompt(prompt: str) -> StoryPrompt:
    lines = prompt.strip().splitlines()
    marker = next((i for i, line in enumerate(lines) if _ORIGINAL_TEXT.match(line.strip())), None)
    if marker is not None:
        header = lines[:marker]
        first = _ORIGINAL_TEXT.match(lines[marker].strip()).group("rest")
        body = ([first] if first else []) + lines[marker + 1 :]
    else:  # no marker: the header is the recognised lines at the top, the rest is the text
        end = 0
        while end < len(lines) and (not lines[end].strip() or _header_match(lines[end].strip())):
            end += 1
        header, body = lines[:end], lines[end:]

    found: dict[str, str] = {}
    for line in header:
        match = _header_match(line.strip())
        if match:
            name, value = match
            found.setdefault(name, value)

    while body and not body[0].strip():
        body = body[1:]
    main_character = None
    if body:
        named = _MAIN_CHARACTER.match(body[0].strip())
        if named:
            main_character = named.group("value").strip() or None
            body = body[1:]
    return StoryPrompt(
        text="\n".join(body).strip(),
        level=level_key(found.get("level", "")),
        genre=genre_name(found.get("genre")),
        style=style_key(found["style"]) if "style" in found else None,
        main_character=main_character,
    )


def _header_match(line: str) -> tuple[str, str] | None:
    for name, pattern in (
        ("level", _LEVEL_LINE),
        ("genre", _GENRE_SENTENCE),
        ("style", _STYLE_SENTENCE),
    ):
        match = pattern.match(line)
        if match:
            return name, match.group("value")
    return None


@dataclass(frozen=True)
class StoryBrief:
    text: str
    level: str
    style: str
    genre: str | None
    main_character: str | None


def story_brief(
    prompt: str,
    *,
    level: str | None = None,
    style: str | None = None,
    genre: str | None = None,
    main_character: str | None = None,
) -> StoryBrief:
    """The story to write: the request's own fields first, then what the prompt says, then
    defaults."""
    read = read_story_prompt(prompt)
    return StoryBrief(
        text=read.text,
        level=level or read.level or DEFAULT_LEVEL,
        style=style or read.style or DEFAULT_STYLE,
        genre=genre_name(genre) or read.genre,
        main_character=" ".join(main_character.split()) if main_character else read.main_character,
    )


# --- the model's script
# -----------------------------------------------------------------------------


class StoryCharacter(BaseModel):
    name: str = Field(description="The character's name.")
    description: str = Field(
        description="Fixed look for every picture: age, build, hair, clothes, colours."
    )
    personality: str = Field(description="Two or three traits, in a short sentence.")


class ChapterScript(BaseModel):
    title: str
    content: str = Field(
        description="The chapter's text: two to four paragraphs at the reader's level."
    )
    image_prompt: str = picture_brief(
        "One key moment of the chapter for an illustrator: setting, characters by name, action, "
        "framing."
    )


class StoryScript(BaseModel):
    title: str
    overview: str = Field(description="What the story is about, in two or three sentences.")
    main_character: StoryCharacter
    supporting_characters: list[StoryCharacter] = Field(
        default_factory=list, json_schema_extra={"maxItems": 3}
    )
    # maxItems guides the model; more chapters than MAX_CHAPTERS are cut rather than refused.
    chapters: list[ChapterScript] = items(MIN_CHAPTERS, MAX_CHAPTERS)
    cover_image_prompt: str = picture_brief(
        "The story's cover picture for an illustrator, with the main character."
    )


def chapter_count(text: str) -> int:
    """About one chapter per 500 characters of source, within 2..5."""
    return max(MIN_CHAPTERS, min(MAX_CHAPTERS, 1 + len(text) // 500))


def story_prompt(brief: StoryBrief, chapters: int) -> str:
    genre = brief.genre.lower() if brief.genre else None
    hero = (
        f"The main character is named {brief.main_character}: use exactly this name for the hero, "
        "in the story and in every image_prompt."
        if brief.main_character
        else "Invent a memorable main character who fits the text, and name them in every "
        "image_prompt."
    )
    return (
        f"Turn the student's text below into an engaging {genre + ' ' if genre else ''}story "
        f"of exactly {chapters} chapters.\n"
        f"Genre: {brief.genre or 'any that suits the text'}. Let the genre shape the plot, "
        "setting and tone, while the facts and ideas of the text stay accurate: the reader should "
        "learn them from the story.\n"
        f"Reading level: {brief.level}. {LEVEL_GUIDANCE[brief.level]}\n"
        f"{hero}\n"
        f"The pictures will be drawn in the style '{style_name(brief.style)}' "
        f"({style_phrase(brief.style)}); "
        "write image prompts that suit it.\n\n"
        f"Student's text:\n<source>\n{brief.text}\n</source>"
    )


def picture_prompt(
    scene: str, hero: StoryCharacter, others: list[StoryCharacter], style: str
) -> str:
    """A chapter's (or the cover's) picture: the scene, the main character by name and look, the
    style by name."""
    cast = "; ".join(f"{c.name}: {c.description.rstrip('. ')}" for c in others)
    return (
        f"{scene}\nMain character: {hero.name}, {hero.description.rstrip('. ')}. Keep "
        f"{hero.name}'s look "
        "the same in every picture.\n"
        + (f"Other characters: {cast}.\n" if cast else "")
        + f"Style: {style_name(style)}: {style_phrase(style)}. {NO_TEXT_IN_PICTURE}"
    )


# a step for the script, the cover, each chapter's picture and the answer
STORY_STEPS = ScriptSteps(
    StoryScript, "Writing the story", "Story written", items="chapters", others=3
)


@dataclass(frozen=True)
class Cast:
    """Who the pictures show: the hero (named as the student asked) and up to three others."""

    hero: StoryCharacter
    others: list[StoryCharacter]

    @classmethod
    def of(cls, script: StoryScript, brief: StoryBrief) -> Cast:
        hero = script.main_character
        # the student named the hero: that name, whatever the model called them
        if brief.main_character:
            hero = hero.model_copy(update={"name": brief.main_character})
        others = [
            c
            for c in script.supporting_characters[:3]
            if c.name.strip().lower() != hero.name.lower()
        ]
        return cls(hero, others)


def picture_jobs(
    script: StoryScript, chapters: list[ChapterScript], cast: Cast, brief: StoryBrief
) -> list[ImageJob]:
    """The cover's picture, then each chapter's."""
    scenes = [f"Cover picture of the story '{script.title}': {script.cover_image_prompt}"]
    scenes += [chapter.image_prompt for chapter in chapters]
    labels = ["cover"] + [f"chapter {number}" for number in range(1, len(chapters) + 1)]
    return [
        ImageJob(
            prompt=picture_prompt(scene, cast.hero, cast.others, brief.style),
            cache_parts=(brief.style, brief.level),
            aspect_ratio="4:3",
            label=label,
        )
        for scene, label in zip(scenes, labels, strict=True)
    ]


def generate_story(ctx: Context, brief: StoryBrief) -> StoryResult:
    wanted = chapter_count(brief.text)
    script = write_script(ctx, STORY_STEPS, story_prompt(brief, wanted), wanted)
    chapters = script.chapters[:MAX_CHAPTERS]
    cast = Cast.of(script, brief)
    script_written(ctx, STORY_STEPS, script.title, len(chapters))

    def drawn(index: int, url: str) -> PartialCover | PartialChapter:
        if index == 0:
            return PartialCover(title=script.title, imageUrl=url)
        return PartialChapter(order=index, title=chapters[index - 1].title, imageUrl=url)

    # the comic's rule: a picture book with most pictures missing is a failure
    outcomes, made = draw_at_least_half(ctx, picture_jobs(script, chapters, cast, brief), drawn)
    story = _story(script, chapters, cast, brief, outcomes)
    ctx.progress.advance("Story ready", f"{made} of {len(outcomes)} pictures drawn")
    return StoryResult(story=story, provider=ctx.provider.name)


def _story(
    script: StoryScript,
    chapters: list[ChapterScript],
    cast: Cast,
    brief: StoryBrief,
    outcomes: list[ImageOutcome],
) -> Story:
    cover, pictures = outcomes[0], outcomes[1:]
    return Story(
        title=script.title,
        content=script.overview,
        level=brief.level,
        chapters=[
            Chapter(
                title=chapter.title,
                content=chapter.content,
                order=number,
                imageUrl=picture.url,
                imageError=picture.error_code,
            )
            for number, (chapter, picture) in enumerate(zip(chapters, pictures, strict=True), 1)
        ],
        imageStyle=style_name(brief.style),
        genre=brief.genre,
        mainCharacters=[
            MainCharacter(name=c.name, description=c.description, personality=c.personality)
            for c in [cast.hero, *cast.others]
        ],
        coverImageUrl=cover.url,
    )
