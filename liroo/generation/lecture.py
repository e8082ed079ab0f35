"""A lecture: one structured call for the script, then its pictures and its narration side by side.

Narration is the lecture's content: the title, each section's title and each
section's script are read aloud (``speech.speak``: every chunk of every clip in
one bounded pool). Like the comic's panels, the lecture fails when fewer than
half of its clips could be made; the pictures are illustrations, left out
(with their error code) when they fail.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, Field

from ..audio import audio_extension
from .context import Context
from .failures import dominant_error
from .images import ImageJob, make_images
from .options import LEVEL_GUIDANCE, NO_TEXT_IN_PICTURE, style_name, style_phrase
from .results import AudioError, AudioFile, Lecture, LectureResult, LectureSection
from .script_fields import items, picture_brief
from .speech import SpeechJob, speak

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


def generate_lecture(
    ctx: Context, lecture_id: str, text: str, level: str, style: str
) -> LectureResult:
    wanted = section_count(text)
    clips_planned = 1 + 2 * wanted
    ctx.progress.plan(
        wanted + clips_planned + 2, "Writing the lecture", f"{wanted} sections planned"
    )
    script = ctx.provider.generate_structured(lecture_prompt(text, level, wanted), LectureScript)
    sections = script.sections[:MAX_SECTIONS]
    speech = [SpeechJob(script.title, "narrator", "title")]
    kinds: list[tuple[str, int | None]] = [("title", None)]
    for index, section in enumerate(sections):
        speech += [
            SpeechJob(section.title, "narrator", f"section {index + 1} title"),
            SpeechJob(section.script, "narrator", f"section {index + 1} script"),
        ]
        # The app indexes ``sections[section - 1]``: sections are numbered from 1.
        kinds += [("section_title", index + 1), ("section_script", index + 1)]
    ctx.progress.plan(
        len(sections) + len(speech) + 2,
        "Lecture written",
        f"{script.title}: {len(sections)} sections",
    )
    ctx.progress.advance("Lecture written", script.title)

    pictures = [
        ImageJob(
            prompt=f"{section.image_prompt}\nStyle: {style_name(style)}: {style_phrase(style)}. "
            f"Suitable for a {level} reader. {NO_TEXT_IN_PICTURE}",
            cache_parts=(style, level),
            aspect_ratio="16:9",
            label=f"section {index + 1} picture",
        )
        for index, section in enumerate(sections)
    ]

    # Pictures and narration use different models (and pacing buckets): make them at the same time.
    # What is finished is shown while the rest is made: each section's picture, each clip (as in
    # audio_files).
    def picture_made(index: int, url: str) -> tuple[str, dict]:
        # numbered from 1, as the section of each clip in audio_files
        return "pictures", {"section": index + 1, "title": sections[index].title, "image_url": url}

    def clip_made(index: int, url: str) -> tuple[str, dict]:
        kind, section = kinds[index]
        return "audio_files", {
            "type": kind,
            "text": speech[index].text,
            "url": url,
            **({} if section is None else {"section": section}),
        }

    with ThreadPoolExecutor(1, thread_name_prefix="liroo-lecture") as side:
        drawing = side.submit(
            make_images,
            ctx,
            pictures,
            lambda done, total: f"Drawing picture {done} of {total}",
            picture_made,
        )
        clips = speak(ctx, speech, finished=clip_made)
        outcomes = drawing.result()
    made = sum(1 for clip in clips if clip.url)
    if made * 2 < len(clips):
        raise dominant_error([c.error for c in clips if c.error is not None])

    audio_files, audio_errors = [], []
    extension = audio_extension(ctx.settings.audio_format)
    for (kind, number), job, clip in zip(kinds, speech, clips, strict=True):
        if clip.url:
            name = (
                f"{lecture_id}-{kind.replace('_', '-')}"
                + ("" if number is None else f"-{number}")
                + f".{extension}"
            )
            audio_files.append(
                AudioFile(type=kind, text=job.text, url=clip.url, filename=name, section=number)
            )
        else:
            audio_errors.append(AudioError(type=kind, section=number, code=clip.error_code))
    lecture = Lecture(
        title=script.title,
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
    ctx.progress.advance(
        "Lecture ready",
        f"{made} of {len(clips)} narration clips, "
        f"{sum(1 for o in outcomes if o.url)} of {len(outcomes)} pictures",
    )
    return LectureResult(
        lecture_id=lecture_id,
        lecture=lecture,
        audio_files=audio_files,
        audio_errors=audio_errors or None,
        provider=ctx.provider.name,
    )
