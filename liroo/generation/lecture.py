"""A lecture: one structured call for the script, then its pictures and its narration side by side.

Narration is the lecture's content: the title, each section's title and each
section's script are read aloud (``speech.speak``: every chunk of every clip in
one bounded pool). Like the comic's panels, the lecture fails when fewer than
half of its clips could be made; the pictures are illustrations, left out
(with their error code) when they fail.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydantic import BaseModel, Field

from ..audio import audio_extension
from .context import Context
from .images import ImageJob, ImageOutcome
from .options import LEVEL_GUIDANCE, NO_TEXT_IN_PICTURE, style_name, style_phrase
from .pipeline import ScriptSteps, at_least_half, draw, script_written, write_script
from .results import (
    AudioError,
    AudioFile,
    ClipKind,
    Lecture,
    LectureResult,
    LectureSection,
    PartialClip,
    PartialPicture,
)
from .script_fields import items, picture_brief
from .speech import Clip, SpeechJob, speak

MIN_SECTIONS, MAX_SECTIONS = 3, 5


class LectureSectionScript(BaseModel):
    title: str
    script: str = Field(
        description="What the lecturer says in this section: spoken prose, no lists or markup."
    )
    image_prompt: str = picture_brief("A picture that supports this section, for an illustrator.")


class LectureScript(BaseModel):
    title: str
    sections: list[LectureSectionScript] = items(MIN_SECTIONS, MAX_SECTIONS)


def section_count(text: str) -> int:
    """About one section per 600 characters of source, within 3..5."""
    return max(MIN_SECTIONS, min(MAX_SECTIONS, 2 + len(text) // 600))


def lecture_prompt(text: str, level: str, sections: int) -> str:
    return (
        f"Write a short spoken lecture of exactly {sections} sections that teaches the student's "
        "text below. Each section has a title, a script to be read aloud (warm, clear spoken "
        "language, no bullet points or markup, about 80-200 words) and an image prompt for a "
        "picture that supports it.\n"
        f"Reading level: {level}. {LEVEL_GUIDANCE[level]}\n"
        "Keep every fact of the text accurate.\n\n"
        f"Student's text:\n<source>\n{text}\n</source>"
    )


# a step for the script, each section's picture and two clips, the title's clip and the answer
LECTURE_STEPS = ScriptSteps(
    LectureScript, "Writing the lecture", "Lecture written", items="sections", per_item=3, others=3
)


@dataclass(frozen=True)
class Narration:
    """One clip to record: what it reads aloud (its kind, and its section counted from 1; None for
    the title)."""

    kind: ClipKind
    section: int | None
    job: SpeechJob

    def filename(self, lecture_id: str, extension: str) -> str:
        number = "" if self.section is None else f"-{self.section}"
        return f"{lecture_id}-{self.kind.replace('_', '-')}{number}.{extension}"


def narration(title: str, sections: list[LectureSectionScript]) -> list[Narration]:
    """The title, then each section's title and script."""
    # The app indexes ``sections[section - 1]``: sections are numbered from 1.
    clips = [Narration("title", None, SpeechJob(title, "narrator", "title"))]
    for number, section in enumerate(sections, 1):
        for kind, text in (("section_title", section.title), ("section_script", section.script)):
            label = f"section {number} {kind.removeprefix('section_')}"
            clips.append(Narration(kind, number, SpeechJob(text, "narrator", label)))
    return clips


def picture_jobs(sections: list[LectureSectionScript], level: str, style: str) -> list[ImageJob]:
    return [
        ImageJob(
            prompt=f"{section.image_prompt}\nStyle: {style_name(style)}: {style_phrase(style)}. "
            f"Suitable for a {level} reader. {NO_TEXT_IN_PICTURE}",
            cache_parts=(style, level),
            aspect_ratio="16:9",
            label=f"section {number} picture",
        )
        for number, section in enumerate(sections, 1)
    ]


def generate_lecture(
    ctx: Context, lecture_id: str, text: str, level: str, style: str
) -> LectureResult:
    wanted = section_count(text)
    script = write_script(ctx, LECTURE_STEPS, lecture_prompt(text, level, wanted), wanted)
    sections = script.sections[:MAX_SECTIONS]
    clips = narration(script.title, sections)
    script_written(ctx, LECTURE_STEPS, script.title, len(sections))
    outcomes, recorded = _illustrate_and_narrate(
        ctx, sections, clips, picture_jobs(sections, level, style)
    )
    made = at_least_half(recorded)
    audio_files, audio_errors = _audio(lecture_id, clips, recorded, ctx.settings.audio_format)
    ctx.progress.advance(
        "Lecture ready",
        f"{made} of {len(recorded)} narration clips, "
        f"{sum(1 for o in outcomes if o.url)} of {len(outcomes)} pictures",
    )
    return LectureResult(
        lecture_id=lecture_id,
        lecture=_lecture(script.title, sections, outcomes),
        audio_files=audio_files,
        audio_errors=audio_errors or None,
        provider=ctx.provider.name,
    )


def _illustrate_and_narrate(
    ctx: Context,
    sections: list[LectureSectionScript],
    clips: list[Narration],
    pictures: list[ImageJob],
) -> tuple[list[ImageOutcome], list[Clip]]:
    """The pictures and the clips, made at the same time: they use different models (and pacing
    buckets). Each one made is shown in /progress while the rest is made."""

    def picture_made(index: int, url: str) -> PartialPicture:
        # numbered from 1, as the section of each clip in audio_files
        return PartialPicture(section=index + 1, title=sections[index].title, image_url=url)

    def clip_made(index: int, url: str) -> PartialClip:
        clip = clips[index]
        return PartialClip(type=clip.kind, text=clip.job.text, url=url, section=clip.section)

    with ThreadPoolExecutor(1, thread_name_prefix="liroo-lecture") as side:
        drawing = side.submit(draw, ctx, pictures, picture_made)
        recorded = speak(ctx, [clip.job for clip in clips], finished=clip_made)
        return drawing.result(), recorded


def _audio(
    lecture_id: str, clips: list[Narration], recorded: list[Clip], audio_format: str
) -> tuple[list[AudioFile], list[AudioError]]:
    """The clips recorded, as the answer's audio files, and the codes of those that were not."""
    extension = audio_extension(audio_format)
    pairs = list(zip(clips, recorded, strict=True))
    audio_files = [
        AudioFile(
            type=clip.kind,
            text=clip.job.text,
            url=record.url,
            filename=clip.filename(lecture_id, extension),
            section=clip.section,
        )
        for clip, record in pairs
        if record.url
    ]
    audio_errors = [
        AudioError(type=clip.kind, section=clip.section, code=record.error_code)
        for clip, record in pairs
        if not record.url
    ]
    return audio_files, audio_errors


def _lecture(
    title: str, sections: list[LectureSectionScript], outcomes: list[ImageOutcome]
) -> Lecture:
    return Lecture(
        title=title,
        sections=[
            LectureSection(
                title=section.title,
                script=section.script,
                image_prompt=section.image_prompt,
                image_url=outcome.url,
                image_error=outcome.error_code,
            )
            for section, outcome in zip(sections, outcomes, strict=True)
        ],
    )
