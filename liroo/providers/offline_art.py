"""Illustrations drawn with Pillow: the scene is read from the prompt, then painted in its style.

``scene_of`` reads what a picture prompt asks for: the elements its words name
(water, plants, sky, mountains, a city, a farm, snow, rain), the time of day
(night or dusk only when the words say so: a text about sunlight is drawn by
day), the element the moment itself is about (seen up close), how many people
the cast has, and the style line (pixel art, watercolour, comic book...), which
changes the rendering. A hash of the prompt seeds the layout, so each prompt
has its picture and the same prompt always the same one. offline_paint.py draws.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from dataclasses import dataclass

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from .base import aspect_ratio_parts
from .offline_paint import Painter

LONG_SIDE = 1024

# element -> the words that show it (with -s, -es, -ed, -ing, -y); a stem ending in * any start
_ELEMENTS = {
    "water": "water sea ocean lake river rain evaporat* vapour droplet wave ship boat harbo* "
    "island "
    "beach shore rubicon mediterranean flood",
    "plants": "plant leaf leaves tree forest flower garden grass chlorophyll chloroplast* "
    "photosynthes* root seed wood field jungle park glucose",
    "sky": "sky sun sunlight light air cloud oxygen bird wind weather atmospher star moon",
    "mountains": "mountain volcano hill rock cliff magma lava peak crust erupt",
    "city": "city town street crowd king queen emperor empire palace castle prison bastille "
    "paris rome senate revolution republic building village school army senator capital",
    "farm": "farm fence gate yard hen barn cow sheep",
    "snow": "snow winter ice frozen cold glacier",
    "rain": "rain rainfall shower",
}
_PHRASES = {
    "water": "water",
    "plants": "green plants and leaves",
    "sky": "the open sky",
    "mountains": "mountains",
    "city": "the streets of an old city",
    "farm": "a farm",
    "snow": "snow",
    "rain": "rain",
}
_NIGHT = ("night", "moon", "star", "dark", "midnight", "owl")
_DUSK = ("sunset", "dusk", "dawn", "evening", "sunrise", "twilight")
_STYLES = (  # a style line's words -> the rendering
    ("pixel", "pixel"),
    ("watercolo", "watercolor"),
    ("comic", "comic"),
    ("ghibli", "anime"),
    ("anime", "anime"),
    ("disney", "cartoon"),
    ("animated", "cartoon"),
    ("3d", "render"),
)
_CAST_LINE = re.compile(r"^(characters|main character|other characters)\b.*$", re.I | re.M)
_STYLE_LINE = re.compile(r"^style:(.*)$", re.I | re.M)


@dataclass(frozen=True)
class Scene:
    """What a picture shows and how: its parameters, compared by the tests."""

    elements: frozenset[str]
    time: str  # "day", "dusk" or "night"
    focus: str  # the element the moment is about, drawn closest
    style: str
    people: int  # figures standing in the picture
    seed: int  # the layout


_SUFFIXES = ("", "s", "es", "ed", "ing", "y", "ies")


def _shows(word: str, stems: str) -> bool:
    for stem in stems.split():
        if stem.endswith("*"):
            if word.startswith(stem[:-1]):
                return True
        elif word.startswith(stem) and word[len(stem) :] in _SUFFIXES:
            return True
    return False


def _elements(words: list[str]) -> list[str]:
    found = []
    for word in words:
        for element, stems in _ELEMENTS.items():
            if element not in found and _shows(word, stems):
                found.append(element)
    return found


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def setting_words(text: str) -> str:
    """The elements a whole text is about, most named first, as a phrase for picture prompts."""
    words = _words(text)
    counts = {e: sum(_shows(w, stems) for w in words) for e, stems in _ELEMENTS.items()}
    ranked = sorted((e for e in counts if counts[e]), key=lambda e: -counts[e])
    # the main element, and the next ones only when the text comes back to them
    top = ranked[:1] + [e for e in ranked[1:3] if counts[e] >= 2] or ["plants", "sky"]
    phrases = [_PHRASES[e] for e in top]
    if len(phrases) == 1:
        return phrases[0]
    return f"{phrases[0]}, with {' and '.join(phrases[1:])}"


def scene_of(prompt: str) -> Scene:
    style_line = _STYLE_LINE.search(prompt)
    style_words = style_line.group(1).lower() if style_line else ""
    style = next((name for key, name in _STYLES if key in style_words), "plain")
    body = _STYLE_LINE.sub("", _CAST_LINE.sub("", prompt))
    moment = re.split(r"(?<=[.!?])\s", body.strip(), maxsplit=1)[0]
    moment_words, words = _words(moment), _words(body)
    elements = _elements(words) or ["plants", "sky"]
    focus = next(iter(_elements(moment_words)), elements[0])
    time = "day"
    if any(w in _NIGHT for w in moment_words) or (
        not moment_words and any(w in _NIGHT for w in words)
    ):
        time = "night"
    elif any(w in _DUSK for w in moment_words):
        time = "dusk"
    cast = _CAST_LINE.search(prompt)
    people = min(3, cast.group(0).count(":") - 1) if cast else 0
    seed = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    return Scene(frozenset(elements), time, focus, style, max(0, people), seed)


def image_size(aspect_ratio: str, long_side: int = LONG_SIDE) -> tuple[int, int]:
    w, h = aspect_ratio_parts(aspect_ratio)
    if w >= h:
        return long_side, max(1, round(long_side * h / w))
    return max(1, round(long_side * w / h)), long_side


def illustrate(prompt: str, aspect_ratio: str = "1:1", long_side: int = LONG_SIDE) -> bytes:
    """A PNG picture for ``prompt`` at ``aspect_ratio``, ``long_side`` pixels on its long side."""
    width, height = image_size(aspect_ratio, long_side)
    scene = scene_of(prompt)
    moods = set(scene.elements) | {scene.time}
    painter = Painter(width, height, random.Random(scene.seed), moods, scene.focus, scene.people)
    image = render(painter.draw(), scene.style)
    buffer = io.BytesIO()
    # The fastest deflate: the bytes go straight to the image pipeline, which decodes them, and
    # level 6 costs three times as long on grainy styles (watercolour) for a quarter fewer bytes.
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def render(image: Image.Image, style: str) -> Image.Image:
    """The painted scene in its style: pixels, washes, inked outlines, or richer colour."""
    w, h = image.size
    if style == "pixel":
        block = max(4, min(w, h) // 96)
        small = image.resize((max(1, w // block), max(1, h // block)), Image.Resampling.BILINEAR)
        small = small.quantize(24, method=Image.Quantize.MEDIANCUT).convert("RGB")
        return small.resize((w, h), Image.Resampling.NEAREST)
    if style == "watercolor":
        # washes: colour bled by a small copy scaled up; paper: coarse noise, scaled up too (fast)
        soft = image.resize((w // 6, h // 6), Image.Resampling.BOX).resize(
            (w, h), Image.Resampling.BICUBIC
        )
        soft = Image.blend(image, soft, 0.6)
        grain = Image.effect_noise((w // 4, h // 4), 30).resize((w, h), Image.Resampling.BILINEAR)
        paper = ImageOps.colorize(grain, (226, 214, 190), (255, 252, 244))
        return Image.blend(ImageEnhance.Color(soft).enhance(0.75), paper, 0.22)
    if style == "comic":
        flat = ImageOps.posterize(ImageEnhance.Color(image).enhance(1.4), 3)
        half = image.convert("L").resize((w // 2, h // 2), Image.Resampling.BOX)
        edges = half.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
        flat.paste((25, 20, 30), (0, 0, w, h), edges.resize((w, h), Image.Resampling.NEAREST))
        return flat
    if style in ("anime", "cartoon"):
        warm = ImageEnhance.Color(image).enhance(1.35 if style == "cartoon" else 1.15)
        return ImageEnhance.Contrast(warm).enhance(1.1 if style == "cartoon" else 0.95)
    if style == "render":
        return ImageEnhance.Contrast(image.filter(ImageFilter.BoxBlur(1))).enhance(1.15)
    return image
