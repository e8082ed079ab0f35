"""Reading levels and image styles: what the app sends, and what each means to the model."""

from __future__ import annotations

import re

LEVELS = ("beginner", "moderate", "intermediate")

LEVEL_GUIDANCE = {
    "beginner": "Write for a young reader (about 8-10 years old): simple everyday words, short "
    "sentences, one idea at a time, and explain any new word right away.",
    "moderate": "Write for a middle-school reader (about 11-13 years old): clear sentences, "
    "everyday vocabulary with a few subject words explained in context.",
    "intermediate": "Write for a confident teenage reader (14 and up): richer vocabulary and the "
    "subject's proper terms, varied sentences, and some nuance.",
}

# key -> (the app's display name, how to ask a model for it)
STYLES = {
    "ghibli": (
        "Studio Ghibli",
        "soft hand-painted anime style inspired by Studio Ghibli films, warm natural light, lush "
        "detailed backgrounds",
    ),
    "disney": (
        "Disney",
        "bright, expressive classic animated-feature style inspired by Disney, clean shapes, "
        "friendly characters",
    ),
    "comic_book": (
        "Comic Book",
        "bold comic book art with clean inked outlines, flat vivid colours and halftone shading",
    ),
    "watercolor": (
        "Watercolor",
        "gentle watercolour painting with soft washes, visible paper texture and loose edges",
    ),
    "pixel_art": (
        "Pixel Art",
        "crisp retro pixel art with a limited palette and clear silhouettes",
    ),
    "3d_render": (
        "3D Render",
        "polished 3D rendered illustration with soft global illumination and rounded forms",
    ),
}

_LOOKUP = {}
for _key, (_display, _) in STYLES.items():
    for _name in (_key, _display):
        _LOOKUP[re.sub(r"[\s_-]+", "", _name.lower())] = _key


def style_key(value: str) -> str | None:
    """The style's key for a display name or raw value in any case ('Comic Book', 'comic_book'), or
    None."""
    return _LOOKUP.get(re.sub(r"[\s_-]+", "", value.strip().lower()))


def level_key(value: str) -> str | None:
    value = value.strip().lower()
    return value if value in LEVELS else None


def style_phrase(key: str) -> str:
    return STYLES[key][1]


def style_name(key: str) -> str:
    return STYLES[key][0]


NO_TEXT_IN_PICTURE = (
    "Do not draw any text, letters, captions, speech bubbles or signatures in the image."
)
