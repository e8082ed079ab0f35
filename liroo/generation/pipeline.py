"""The shape the illustrated generations share: plan, script, pictures, the half rule, the answer.

A comic, a story, a lecture and a study page each announce the items they
plan, ask the model for a script in one structured call, announce the items
the script really holds, then make that many pictures (a lecture also its
narration clips), each shown in /progress as a partial result as soon as it
is made (``Finished``). Pictures and clips reserve their memory from the
governor before every heavy step (``images.make_images``, ``speech.speak``).
A picture book or a lecture with most of its pictures or clips missing is a
failure (``at_least_half``); the study page keeps whatever pictures it got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, Sequence, TypeVar

from pydantic import BaseModel

from .context import Context, Finished
from .failures import dominant_error
from .images import ImageJob, ImageOutcome, make_images

Script = TypeVar("Script", bound=BaseModel)


@dataclass(frozen=True)
class ScriptSteps(Generic[Script]):
    """A generation's script (``schema``, what the model writes) and how /progress counts and names
    the steps around it.

    There are ``per_item`` steps for each item of the script (a panel's picture;
    a lecture section's picture and its two clips) and ``others`` besides (the
    script's call and the answer; a story's cover, a lecture's title clip).
    """

    schema: type[Script]
    writing: str  # the step while the model writes, e.g. "Writing the comic script"
    written: str  # the step once it has, e.g. "Script written"
    items: str = ""  # what the script holds, plural ("panels"), for the steps' details
    per_item: int = 1
    others: int = 2

    def total(self, items: int) -> int:
        return self.per_item * items + self.others


def write_script(ctx: Context, steps: ScriptSteps[Script], prompt: str, wanted: int) -> Script:
    """The model's script, once /progress has planned ``wanted`` items."""
    planned = f"{wanted} {steps.items} planned" if steps.items else ""
    ctx.progress.plan(steps.total(wanted), steps.writing, planned)
    return ctx.provider.generate_structured(prompt, steps.schema)


def script_written(ctx: Context, steps: ScriptSteps, title: str, items: int) -> None:
    """The script is in: /progress plans the ``items`` it really holds and counts its step."""
    details = f"{title}: {items} {steps.items}" if steps.items else title
    ctx.progress.plan(steps.total(items), steps.written, details)
    ctx.progress.advance(steps.written, title)


def draw(
    ctx: Context, jobs: list[ImageJob], finished: Finished | None = None, name: str = "picture"
) -> list[ImageOutcome]:
    """Every picture of ``jobs`` (one step each, "Drawing picture 2 of 5"); each one made is shown
    in /progress through ``finished``."""
    return make_images(
        ctx, jobs, step=lambda done, total: f"Drawing {name} {done} of {total}", finished=finished
    )


class Made(Protocol):
    """A picture's or a clip's outcome."""

    @property
    def url(self) -> str | None: ...

    @property
    def error(self) -> Exception | None: ...


def at_least_half(outcomes: Sequence[Made]) -> int:
    """The half rule: how many of ``outcomes`` were made, or, when fewer than half were, the most
    telling of their errors raised."""
    made = sum(1 for outcome in outcomes if outcome.url)
    if made * 2 < len(outcomes):
        raise dominant_error([o.error for o in outcomes if o.error is not None])
    return made


def draw_at_least_half(
    ctx: Context, jobs: list[ImageJob], finished: Finished, name: str = "picture"
) -> tuple[list[ImageOutcome], int]:
    """``draw`` under the half rule: the outcomes and how many were drawn."""
    outcomes = draw(ctx, jobs, finished, name)
    return outcomes, at_least_half(outcomes)
