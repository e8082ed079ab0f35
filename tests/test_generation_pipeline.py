"""The pipeline the illustrated generations share (liroo/generation/pipeline.py): the steps it
plans around a script, and the half rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from liroo.generation.comic import COMIC_STEPS
from liroo.generation.context import Progress
from liroo.generation.images import ImageOutcome
from liroo.generation.lecture import LECTURE_STEPS
from liroo.generation.pipeline import at_least_half, script_written, write_script
from liroo.generation.story import STORY_STEPS
from liroo.generation.study import STUDY_STEPS
from liroo.governor import MemoryPressure
from liroo.providers.base import BadOutput


class RecordedSteps:
    """A job store stand-in that keeps every step written: (step, details, number, total)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, int, int]] = []

    def progress(self, request_id, step, step_number, total_steps, details, partial=None):
        self.steps.append((step, details, step_number, total_steps))

    def cancel_requested(self, request_id):
        return False


def test_the_steps_planned_around_each_generations_script():
    # per item and besides: a comic's panel; a story's chapter, with its cover; a lecture
    # section's picture and two clips, with the title's clip; a study page's picture
    assert [steps.total(4) for steps in (COMIC_STEPS, STORY_STEPS, LECTURE_STEPS, STUDY_STEPS)] == [
        6,
        7,
        15,
        6,
    ]


@pytest.mark.parametrize(
    "steps, planned, written",
    [
        (COMIC_STEPS, "Writing the comic script", "Script written"),
        (STUDY_STEPS, "Writing the study page", "Study page written"),
    ],
)
def test_a_script_is_planned_written_and_counted(steps, planned, written):
    store = RecordedSteps()
    script = object()
    asked = []
    ctx = SimpleNamespace(
        progress=Progress(store, "pipeline-test"),
        provider=SimpleNamespace(
            generate_structured=lambda prompt, schema: asked.append((prompt, schema)) or script
        ),
    )
    assert write_script(ctx, steps, "the prompt", 5) is script
    assert asked == [("the prompt", steps.schema)]
    script_written(ctx, steps, "Bees", 3)
    items = f" {steps.items}" if steps.items else ""
    assert store.steps == [
        (planned, f"5{items} planned" if items else "", 0, 7),
        (written, f"Bees: 3{items}" if items else "Bees", 0, 5),
        (written, "Bees", 1, 5),
    ]


def test_at_least_half_must_be_made_or_the_most_telling_error_is_raised():
    made, pressure, bad = (
        ImageOutcome(url="u"),
        ImageOutcome(error=MemoryPressure(used_mb=900, limit_mb=1000, retry_after_s=5)),
        ImageOutcome(error=BadOutput("no picture")),
    )
    assert at_least_half([made, bad]) == 1  # exactly half is enough
    assert at_least_half([]) == 0
    with pytest.raises(MemoryPressure):  # retryable errors speak first
        at_least_half([made, bad, pressure])
    with pytest.raises(BadOutput):
        at_least_half([bad])
