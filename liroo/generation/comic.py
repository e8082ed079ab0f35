"""A comic: one structured call for the script, then the panels' images, a few at a time."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .context import Context
from .images import ImageJob, ImageOutcome
from .options import LEVEL_GUIDANCE, NO_TEXT_IN_PICTURE, style_name, style_phrase
from .pipeline import ScriptSteps, draw_at_least_half, script_written, write_script
from .results import Comic, ComicPanel, ComicResult, PartialPanel
from .script_fields import picture_brief

MIN_PANELS = 3


class Character(BaseModel):
    name: str = Field(description="The character's name.")
    description: str = Field(
        description="Fixed look for every panel: age, build, hair, clothes, colours."
    )


class DialogueLine(BaseModel):
    speaker: str = Field(description="Who speaks: a character's name or 'Narrator'.")
    line: str = Field(description="What they say, in the reader's level of language.")


class ComicPanelScript(BaseModel):
    scene: str = Field(description="What happens in this panel, in one or two sentences.")
    image_prompt: str = picture_brief(
        "A visual description of the panel for an illustrator: setting, characters by name, "
        "action, framing."
    )
    dialogue: list[DialogueLine] = Field(default_factory=list, max_length=4)


class ComicScript(BaseModel):
    comic_title: str
    theme: str = Field(description="The lesson or idea the comic teaches, in one sentence.")
    characters: list[Character] = Field(min_length=1, max_length=6)
    panels: list[ComicPanelScript] = Field(min_length=MIN_PANELS)


def panel_count(text: str, max_panels: int) -> int:
    """About one panel per 300 characters of source, within 3..max_panels."""
    return max(MIN_PANELS, min(max_panels, 2 + len(text) // 300))


def script_prompt(text: str, level: str, style: str, panels: int) -> str:
    return (
        f"Turn the student's text below into an educational comic of exactly {panels} panels.\n"
        f"Reading level: {level}. {LEVEL_GUIDANCE[level]}\n"
        f"Art style of the comic: {style_name(style)}.\n"
        "Keep the facts of the text accurate. Give every character a fixed visual description so "
        "they look the same in every panel. Dialogue is short (at most 25 words a line).\n\n"
        f"Student's text:\n{text}"
    )


def panel_image_prompt(script: ComicScript, panel: ComicPanelScript, style: str) -> str:
    cast = "; ".join(f"{c.name}: {c.description}" for c in script.characters)
    return (
        f"{panel.image_prompt}\nCharacters (keep their look consistent): {cast}.\n"
        f"Style: {style_phrase(style)}. {NO_TEXT_IN_PICTURE}"
    )


def _dialogue_dict(lines: list[DialogueLine]) -> dict[str, str]:
    dialogue: dict[str, str] = {}
    for entry in lines:
        speaker = entry.speaker.strip() or "Narrator"
        dialogue[speaker] = (
            f"{dialogue[speaker]} {entry.line}".strip() if speaker in dialogue else entry.line
        )
    return dialogue


COMIC_STEPS = ScriptSteps(ComicScript, "Writing the comic script", "Script written", items="panels")


def generate_comic(ctx: Context, text: str, level: str, style: str) -> ComicResult:
    wanted = panel_count(text, ctx.settings.max_panels)
    script = write_script(ctx, COMIC_STEPS, script_prompt(text, level, style, wanted), wanted)
    panels = script.panels[: ctx.settings.max_panels]
    script_written(ctx, COMIC_STEPS, script.comic_title, len(panels))
    jobs = [
        ImageJob(panel_image_prompt(script, panel, style), (style, level), label=f"panel {i}")
        for i, panel in enumerate(panels, 1)
    ]

    def drawn_panel(index: int, url: str) -> PartialPanel:
        panel = panels[index]
        return PartialPanel(
            panel_id=index + 1,
            image_url=url,
            scene=panel.scene,
            dialogue=_dialogue_dict(panel.dialogue),
        )

    outcomes, drawn = draw_at_least_half(ctx, jobs, drawn_panel, name="panel")
    comic = _comic(script, panels, outcomes)
    ctx.progress.advance("Comic ready", f"{drawn} of {len(panels)} panels drawn")
    return ComicResult(success=True, comic=comic, provider=ctx.provider.name)


def _comic(
    script: ComicScript, panels: list[ComicPanelScript], outcomes: list[ImageOutcome]
) -> Comic:
    return Comic(
        comic_title=script.comic_title,
        theme=script.theme,
        character_style_guide={c.name: c.description for c in script.characters},
        panel_layout=[
            ComicPanel(
                panel_id=number,
                scene=panel.scene,
                image_prompt=panel.image_prompt,
                dialogue=_dialogue_dict(panel.dialogue),
                image_url=outcome.url,
                image_error=outcome.error_code,
            )
            for number, (panel, outcome) in enumerate(zip(panels, outcomes, strict=True), 1)
        ],
    )
