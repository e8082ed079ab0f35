"""The offline provider's content reads as a teacher would show it, in every mode.

A handful of school texts go through the real generation code (the app in
process, its test client, local storage in a temporary folder; no gunicorn is
needed to read what the provider writes) and the answers are read as a person
would: whole titles, numbers and dates kept, no paragraph twice, speakers who
are people, bubbles that are not the caption, chapters in the text's order,
quiz distractors of the answer's kind, pictures that follow the topic and
differ panel to panel, and level, genre and style that change what is seen.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from liroo import create_app
from liroo.generation.comic import ComicScript, panel_count, panel_image_prompt, script_prompt
from liroo.generation.lecture import LectureScript, lecture_prompt, section_count
from liroo.generation.story import StoryScript, chapter_count, story_brief, story_prompt
from liroo.generation.study import Learner, StudyPage, study_page_prompt
from liroo.providers.offline import OfflineProvider
from liroo.providers.offline_art import illustrate, scene_of
from liroo.providers.offline_text import split_subject
from liroo.settings import Settings

PHOTOSYNTHESIS = (
    "Photosynthesis is the process by which green plants make their own food. It takes place "
    "mainly in the leaves, inside tiny structures called chloroplasts. Chlorophyll, the green "
    "pigment, captures energy from sunlight. The plant takes in carbon dioxide from the air and "
    "water from the soil. Using the energy of light, it turns them into glucose and releases "
    "oxygen. Almost all life on Earth depends on this process."
)
FRENCH_REVOLUTION = (
    "The French Revolution began in 1789 and ended in 1799. On 14 July 1789, crowds in Paris "
    "stormed the Bastille, an old prison. King Louis XVI was executed in January 1793. "
    "Maximilien Robespierre led the Reign of Terror until his fall in July 1794. In 1799, "
    "Napoleon Bonaparte seized power in France. The Revolution spread ideas of liberty and "
    "equality across Europe."
)
WATER_CYCLE = (
    "The water cycle is the journey water takes around our planet. The sun heats the water in "
    "oceans, lakes and rivers. The water evaporates and rises into the sky as vapour. High in "
    "the air, the vapour cools and forms clouds. When the droplets in the clouds grow heavy, they "
    "fall as rain or snow. Rivers carry the water back to the sea, and the cycle begins again."
)
FOX = (
    "Once upon a time, a clever fox named Rusty lived at the edge of a forest. Every night Rusty "
    "watched the farmer's hens from behind the fence. One evening the farmer, Mr Hale, forgot to "
    "lock the gate. Rusty crept into the yard under the bright moon. The old dog Biscuit barked "
    "and woke the whole farm. Rusty ran back to the forest and learned to be more careful."
)
ROME = (
    "According to legend, Rome was founded in 753 BC by Romulus and Remus. For centuries the "
    "city was a republic ruled by the Senate. In 49 BC Julius Caesar crossed the Rubicon river "
    "with his army. Caesar was murdered in 44 BC by senators who feared his power. His adopted "
    "son Augustus became the first Roman emperor in 27 BC. The empire grew to about 60 million "
    "people around the Mediterranean Sea."
)

# name -> (text, people in it, places and things named in it, its nouns, what its pictures show);
# all but the text are in offline_content_facts.json, read once here.
_FACTS = json.loads((Path(__file__).parent / "offline_content_facts.json").read_text())


def _reading(name: str, text: str) -> tuple:
    facts = _FACTS[name]
    return text, set(facts["people"]), set(facts["named"]), facts["nouns"], facts["pictures"]


TEXTS = {
    name: _reading(name, text)
    for name, text in [
        ("photosynthesis", PHOTOSYNTHESIS),
        ("french revolution", FRENCH_REVOLUTION),
        ("water cycle", WATER_CYCLE),
        ("fox", FOX),
        ("rome", ROME),
    ]
}
ROLES = {"Narrator", "Teacher", "Student", "Reader", "Guide"}
# Words a cut title or a dropped number leaves at the end of a phrase.
DANGLING = set(
    "a an the and or but of in on at to by for from with which that who whose is are was were "
    "its their his her this these those as into than".split()
)
NUMBER = re.compile(r"\b\d[\d,]*\b")


def script(prompt: str, schema):
    """What the offline provider answers the generator's own prompt and schema."""
    return OfflineProvider().generate_structured(prompt, schema)


def comic_script(text: str, level: str = "moderate", style: str = "comic_book") -> ComicScript:
    return script(script_prompt(text, level, style, panel_count(text, 8)), ComicScript)


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def assert_whole(phrase: str, what: str) -> None:
    """A title or sentence that ends on a sentence boundary or a full noun phrase, with no hole
    where a number was."""
    assert phrase.strip(), what
    last = words(phrase)[-1].lower()
    assert last not in DANGLING, f"{what} is cut: {phrase!r}"
    assert not re.search(r"\b(in|on|of|and|since|until)\s+(and|in|,|\.|the\s+and)", phrase), (
        f"{what} lost a number: {phrase!r}"
    )


def assert_numbers_kept(text: str, written: str) -> None:
    missing = set(NUMBER.findall(text)) - set(NUMBER.findall(written))
    assert not missing, f"numbers dropped: {sorted(missing)}"


def assert_no_repeats(paragraphs: list[str], what: str) -> None:
    seen = [" ".join(p.split()) for p in paragraphs if p.strip()]
    assert len(seen) == len(set(seen)), f"{what} repeat: {seen}"


def source_order(text: str, paragraphs: list[str]) -> list[int]:
    """Where each of the text's sentences first shows in ``paragraphs``, in the text's order."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    joined = " ".join(" ".join(paragraphs).split())
    found = []
    for sentence in sentences:
        # the sentence's longest run of words carries it (a simplified sentence keeps its core)
        key = " ".join(words(sentence)[-4:])
        at = " ".join(words(joined)).find(key)
        if at >= 0:
            found.append(at)
    return found


# --- comics -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_comic_reads_well(name):
    text, people, things, _, topic = TEXTS[name]
    comic = comic_script(text)
    assert_whole(comic.comic_title, "comic title")
    assert_whole(comic.theme, "theme")
    scenes = [panel.scene for panel in comic.panels]
    for scene in scenes:
        assert_whole(scene, "caption")
    assert_no_repeats(scenes, "captions")
    lines = [line.line for panel in comic.panels for line in panel.dialogue]
    assert_numbers_kept(text, " ".join([comic.theme, *scenes, *lines]))
    speakers = {c.name for c in comic.characters} | {
        line.speaker for panel in comic.panels for line in panel.dialogue
    }
    for speaker in speakers:
        assert speaker not in things, f"{speaker!r} is a place or thing, not a person"
        assert speaker in ROLES or any(person in speaker for person in people), speaker
    for panel in comic.panels:
        caption = f" {' '.join(words(panel.scene.lower()))} "
        assert panel.dialogue, "a panel without words"
        for line in panel.dialogue:
            said = f" {' '.join(words(line.line.lower()))} "
            assert said not in caption and caption not in said, (
                f"bubble repeats the caption: {said}"
            )
    assert sorted(source_order(text, scenes)) == source_order(text, scenes), "panels out of order"
    # the pictures: each panel its own scene, about the text's topic (a text about sunlight by day)
    pictures = [scene_of(panel_image_prompt(comic, panel, "comic_book")) for panel in comic.panels]
    assert len(set(pictures)) == len(pictures), "two panels draw the same scene"
    assert sum(topic in picture.elements for picture in pictures) * 2 > len(pictures), pictures
    if name == "photosynthesis":
        assert all(picture.time == "day" for picture in pictures), pictures


def test_a_long_text_gets_the_parts_the_prompt_asks_for():
    text = " ".join(entry[0] for entry in TEXTS.values())
    comic = comic_script(text)
    assert len(comic.panels) == panel_count(text, 8)
    for panel in comic.panels:  # a caption, not a page
        assert len(re.findall(r"[.!?](?:\s|$)", panel.scene)) <= 2, panel.scene
    lecture = script(lecture_prompt(text, "moderate", section_count(text)), LectureScript)
    assert len(lecture.sections) == section_count(text)
    assert_numbers_kept(text, " ".join(section.script for section in lecture.sections))


def test_a_comic_through_the_app_has_different_pictures(tmp_path):
    client = create_app(Settings(provider="offline", media_dir=str(tmp_path))).test_client()
    response = client.post(
        "/generate_comic",
        json={"text": WATER_CYCLE, "level": "beginner", "image_style": "Watercolor"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    panels = response.get_json()["comic"]["panel_layout"]
    pictures = {client.get(p["image_url"].removeprefix("http://localhost")).data for p in panels}
    assert len(pictures) == len(panels) >= 3
    assert all("water" in scene_of(p["image_prompt"]).elements for p in panels)


def test_image_style_shows_in_the_picture():
    scene = "A green field of plants and leaves in the sunlight."
    looks = {
        style: Image.open(io.BytesIO(illustrate(f"{scene}\nStyle: {phrase}.", "1:1", 256)))
        for style, phrase in {
            "pixel": "crisp retro pixel art with a limited palette and clear silhouettes",
            "watercolor": "gentle watercolour painting with soft washes, visible paper texture",
            "comic": "bold comic book art with clean inked outlines, flat vivid colours",
        }.items()
    }
    colours = {
        style: len(image.convert("RGB").getcolors(1 << 20) or []) for style, image in looks.items()
    }
    assert colours["pixel"] <= 64 < colours["watercolor"], colours
    assert (
        scene_of(f"{scene}\nStyle: crisp retro pixel art.").style
        != scene_of(f"{scene}\nStyle: gentle watercolour painting.").style
    )


# --- stories ------------------------------------------------------------------------


def story_script(text: str, genre: str, level: str = "moderate") -> StoryScript:
    brief = story_brief(text, genre=genre, level=level, style="watercolor")
    return script(story_prompt(brief, chapter_count(brief.text)), StoryScript)


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_story_follows_the_text(name):
    text, people, things, _, _ = TEXTS[name]
    story = story_script(text, "adventure")
    assert_whole(story.title, "story title")
    chapters = [chapter.content for chapter in story.chapters]
    for chapter in story.chapters:
        assert_whole(chapter.title, "chapter title")
    assert_no_repeats(chapters, "chapters")
    assert_numbers_kept(text, " ".join(chapters))
    order = source_order(text, chapters)
    assert len(order) >= 4 and sorted(order) == order, "chapters are not in the text's order"
    for character in [story.main_character, *story.supporting_characters]:
        assert character.name not in things, character


def test_genre_shows_in_the_story():
    stories = {genre: story_script(FOX, genre) for genre in ("mystery", "adventure")}
    assert stories["mystery"].title != stories["adventure"].title
    for genre, story in stories.items():
        told = f"{story.title} {story.overview}".lower()
        assert genre in told, (genre, story.title, story.overview)


# --- study pages and quizzes ------------------------------------------------------------


def option_kind(option: str, names: set[str]) -> str:
    if NUMBER.search(option):
        return "number"
    if option in names:
        return "name"
    return "term"


def study_page(text: str, level: str = "moderate") -> StudyPage:
    return script(study_page_prompt(text, Learner(level)), StudyPage)


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_study_page_has_no_repeats_and_fair_distractors(name):
    text, people, things, nouns, _ = TEXTS[name]
    page = study_page(text)
    paragraphs = [p for section in page.sections for p in section.paragraphs]
    headings = [page.title, page.quiz_title, *(section.heading for section in page.sections)]
    for heading in headings:
        assert_whole(heading, "heading")
    assert_no_repeats(paragraphs, "paragraphs")
    assert_no_repeats(headings, "headings")
    assert_numbers_kept(text, " ".join(paragraphs))
    names = people | things
    terms = set(nouns.split())
    for question in page.questions:
        answer = question.options[question.correct_option_index]
        kind = option_kind(answer, names)
        for option in question.options:
            assert option_kind(option, names) == kind, (answer, question.options)
            if kind == "term":
                assert option.lower() in terms, (answer, question.options)


def test_level_changes_length_and_vocabulary():
    text = ROME + " " + PHOTOSYNTHESIS

    def paragraphs(level):
        return [p for section in study_page(text, level).sections for p in section.paragraphs]

    easy, hard = paragraphs("beginner"), paragraphs("intermediate")
    easy_words, hard_words = words(" ".join(easy)), words(" ".join(hard))
    assert len(easy_words) < len(hard_words) * 0.85
    sentences = lambda ps: [s for p in ps for s in re.split(r"(?<=[.!?])\s+", p) if s]  # noqa: E731
    assert len(easy_words) / len(sentences(easy)) < len(hard_words) / len(sentences(hard))
    assert_numbers_kept(ROME, " ".join(easy))


# --- lectures -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEXTS))
def test_a_lecture_follows_the_text(name):
    text, *_ = TEXTS[name]
    lecture = script(lecture_prompt(text, "moderate", section_count(text)), LectureScript)
    assert_whole(lecture.title, "lecture title")
    scripts = [section.script for section in lecture.sections]
    for section in lecture.sections:
        assert_whole(section.title, "section title")
    assert_no_repeats(scripts, "section scripts")
    assert_no_repeats([s.title for s in lecture.sections], "section titles")
    assert_numbers_kept(text, " ".join(scripts))
    order = source_order(text, scripts)
    assert sorted(order) == order
    assert len({scene_of(s.image_prompt) for s in lecture.sections}) == len(scripts)


@pytest.mark.parametrize(
    "sentence, subject",
    [
        ("Volcanoes form where magma rises through cracks in the Earth's crust.", "Volcanoes"),
        ("Plants make food from sunlight, water and air.", "Plants"),
        ("The bees carry pollen when they visit flowers.", "The bees"),
        ("Photosynthesis is the process by which plants make food.", "Photosynthesis"),
        ("The French Revolution began in 1789.", "The French Revolution"),
    ],
)
def test_a_sentences_subject_stops_at_its_verb(sentence, subject):
    """Titles and questions are made from it: "Volcanoes Form Where Magma" was a cut clause."""
    assert split_subject(sentence)[1] == subject
