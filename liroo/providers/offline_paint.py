"""The painter of the offline pictures: a landscape drawn with Pillow from a scene's parameters.

offline_art.py reads the scene from the prompt (what it shows, the time of day,
the style); this module draws it. Sizes scale with the picture; the layout
comes from a random generator seeded by the prompt, so a prompt always gives
the same picture and two prompts different ones.
"""

from __future__ import annotations

import colorsys
import math
import random

from PIL import Image, ImageDraw, ImageFilter, ImageOps


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, max(0.0, min(1.0, s)), max(0.0, min(1.0, v)))
    return int(r * 255), int(g * 255), int(b * 255)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b, strict=False))  # type: ignore[return-value]


class Painter:
    """Draws one scene: ``moods`` are its elements and time of day, ``focus`` the element seen
    closest, ``people`` how many figures stand in it."""

    def __init__(
        self,
        width: int,
        height: int,
        rng: random.Random,
        moods: set[str],
        focus: str = "",
        people: int = 0,
    ) -> None:
        self.w, self.h, self.rng, self.moods = width, height, rng, moods
        self.focus, self.people = focus, people
        self.hue = rng.random()
        self.unit = min(width, height) / 100.0  # sizes scale with the picture
        self.horizon = height * rng.uniform(0.48, 0.62)
        self.image = Image.new("RGB", (width, height))
        self.draw_ = ImageDraw.Draw(self.image)
        self.front_ridge: list[tuple[float, float]] = []
        self.land = (0.0, float(width))  # where things can stand

    def draw(self) -> Image.Image:
        self.sky()
        self.light()
        if "night" in self.moods:
            self.stars()
        elif "rain" not in self.moods:
            self.clouds()
        if "mountains" in self.moods:
            self.mountains()
        if "city" in self.moods:
            self.skyline()
        self.hills()
        if "water" in self.moods:
            self.water()
        self.features()
        if "farm" in self.moods:
            self.fence()
        if self.people:
            self.figures()
        if "rain" in self.moods:
            self.rain()
        if self.focus == "plants":
            self.foliage()
        return ImageOps.expand(
            self.image.crop((6, 6, self.w - 6, self.h - 6)), border=6, fill=(250, 246, 236)
        )

    def sky(self) -> None:
        rng, hue = self.rng, self.hue
        if "night" in self.moods:
            top, bottom = _rgb(0.62 + rng.uniform(-0.05, 0.05), 0.7, 0.18), _rgb(0.68, 0.55, 0.42)
        elif "dusk" in self.moods:
            top, bottom = (
                _rgb(0.72 + rng.uniform(-0.05, 0.05), 0.55, 0.55),
                _rgb(0.06 + rng.uniform(0, 0.06), 0.65, 0.98),
            )
        else:
            top, bottom = _rgb(0.55 + rng.uniform(-0.05, 0.05), 0.55, 0.92), _rgb(hue, 0.12, 1.0)
        gradient = Image.linear_gradient("L").resize((self.w, self.h))
        self.image.paste(ImageOps.colorize(gradient, top, bottom))
        self.sky_bottom = bottom

    def light(self) -> None:
        rng, u = self.rng, self.unit
        x = self.w * rng.uniform(0.15, 0.85)
        y = self.horizon * rng.uniform(0.2, 0.55)
        r = u * rng.uniform(6, 11)
        if "night" in self.moods:
            core, glow = (245, 243, 225), (120, 130, 170)
        elif "dusk" in self.moods:
            core, glow = (255, 196, 120), (255, 150, 110)
        else:
            core, glow = (255, 244, 190), (255, 230, 160)
        # The glow is blurred at a quarter of the size and scaled up: a soft edge looks the same,
        # and a wide blur over the full picture was the painter's slowest step.
        q = 4
        mask = Image.new("L", (max(1, self.w // q), max(1, self.h // q)), 0)
        ImageDraw.Draw(mask).ellipse(
            ((x - r * 2.6) / q, (y - r * 2.6) / q, (x + r * 2.6) / q, (y + r * 2.6) / q), fill=150
        )
        mask = mask.filter(ImageFilter.GaussianBlur(r / q)).resize(self.image.size)
        self.image.paste(glow, (0, 0, self.w, self.h), mask)
        self.draw_ = ImageDraw.Draw(self.image)
        self.draw_.ellipse((x - r, y - r, x + r, y + r), fill=core)
        if "night" in self.moods:  # the moon's seas
            for _ in range(3):
                cx, cy, cr = (
                    x + self.rng.uniform(-0.5, 0.5) * r,
                    y + self.rng.uniform(-0.5, 0.5) * r,
                    r * self.rng.uniform(0.12, 0.25),
                )
                self.draw_.ellipse((cx - cr, cy - cr, cx + cr, cy + cr), fill=(214, 212, 196))

    def stars(self) -> None:
        for _ in range(self.rng.randint(60, 160)):
            x, y = self.rng.uniform(0, self.w), self.rng.uniform(0, self.horizon)
            s = self.rng.uniform(0.15, 0.45) * self.unit
            self.draw_.ellipse((x - s, y - s, x + s, y + s), fill=(255, 255, 235))

    def clouds(self) -> None:
        for _ in range(self.rng.randint(2, 5)):
            cx, cy = (
                self.rng.uniform(0, self.w),
                self.rng.uniform(self.h * 0.06, self.horizon * 0.7),
            )
            tone = (255, 250, 245) if "dusk" not in self.moods else (255, 214, 200)
            for _ in range(self.rng.randint(3, 6)):
                rx, ry = self.rng.uniform(5, 12) * self.unit, self.rng.uniform(3, 6) * self.unit
                dx, dy = self.rng.uniform(-10, 10) * self.unit, self.rng.uniform(-2, 2) * self.unit
                self.draw_.ellipse(
                    (cx + dx - rx, cy + dy - ry, cx + dx + rx, cy + dy + ry), fill=tone
                )

    def _ridge(self, base: float, amplitude: float) -> list[tuple[float, float]]:
        waves = [
            (self.rng.uniform(0.5, 3.0), self.rng.uniform(0, math.tau), self.rng.uniform(0.3, 1.0))
            for _ in range(3)
        ]
        points = []
        steps = 64
        for i in range(steps + 1):
            x = self.w * i / steps
            y = (
                base
                - amplitude
                * sum(a * math.sin(f * math.tau * x / self.w + p) for f, p, a in waves)
                / 2
            )
            points.append((x, y))
        return points

    def hills(self) -> None:
        layers = 3
        if "snow" in self.moods:
            land_hue, sat = 0.58, 0.08
        elif "night" in self.moods:
            land_hue, sat = 0.62, 0.35
        else:
            land_hue, sat = 0.25 + self.rng.uniform(-0.08, 0.08) + (self.hue - 0.5) * 0.1, 0.5
        for layer in range(layers):
            depth = layer / (layers - 1)
            base = self.horizon + (self.h - self.horizon) * (0.05 + 0.38 * depth)
            ridge = self._ridge(base, self.unit * (14 - 6 * depth))
            light = 0.85 - 0.35 * depth if "night" not in self.moods else 0.45 - 0.2 * depth
            colour = _mix(
                _rgb(land_hue + 0.03 * layer, sat, light), self.sky_bottom, 0.35 * (1 - depth)
            )
            self.draw_.polygon(ridge + [(self.w, self.h), (0, self.h)], fill=colour)
            if "snow" in self.moods and layer == 0:
                for (x1, y1), (x2, y2) in zip(ridge, ridge[1:], strict=False):
                    self.draw_.line(
                        (x1, y1, x2, y2), fill=(250, 250, 255), width=max(1, int(self.unit))
                    )
            self.front_ridge = ridge

    def land_x(self, lo: float, hi: float) -> float:
        """A point between fractions ``lo`` and ``hi`` of the land's width."""
        x0, x1 = self.land
        return x0 + (x1 - x0) * self.rng.uniform(lo, hi)

    def ground_at(self, x: float) -> float:
        ridge = self.front_ridge
        x0, x1 = ridge[0][0], ridge[-1][0]
        i = min(len(ridge) - 2, max(0, int((x - x0) / (x1 - x0) * (len(ridge) - 1))))
        (x1, y1), (x2, y2) = ridge[i], ridge[i + 1]
        return y1 + (y2 - y1) * ((x - x1) / (x2 - x1) if x2 != x1 else 0)

    def water(self) -> None:
        top = self.h * self.rng.uniform(0.72, 0.8)
        colour = _rgb(
            0.55 + self.rng.uniform(-0.04, 0.04), 0.6, 0.75 if "night" not in self.moods else 0.35
        )
        self.draw_.rectangle((0, top, self.w, self.h), fill=colour)
        for _ in range(40):
            x, y = self.rng.uniform(0, self.w), self.rng.uniform(top + self.unit, self.h)
            length = self.rng.uniform(3, 9) * self.unit
            self.draw_.line(
                (x, y, x + length, y),
                fill=_mix(colour, (255, 255, 255), 0.45),
                width=max(1, int(self.unit * 0.4)),
            )
        boat_x = self.rng.uniform(0.1, 0.35)
        # A beach on one side: the land the trees, houses and figures stand on.
        left = self.rng.random() < 0.5
        x0, x1 = (0.0, self.w * 0.55) if left else (self.w * 0.45, float(self.w))
        sand = (236, 214, 160) if "night" not in self.moods else (120, 110, 100)
        shore_top = top + (self.h - top) * 0.25
        ridge = [
            (
                x0 + (x1 - x0) * i / 16,
                shore_top + (self.h - shore_top) * 0.5 * (i / 16 if left else 1 - i / 16),
            )
            for i in range(17)
        ]
        self.draw_.polygon(ridge + [(x1, self.h), (x0, self.h)], fill=sand)
        self.front_ridge = ridge
        self.land = (x0, x1)
        if self.rng.random() < 0.7:  # a boat on the open water
            bx = (x1 + (self.w - x1) * boat_x * 2) if left else x0 * (1 - boat_x * 2)
            by = top + (self.h - top) * 0.15
            s = self.unit * 5
            self.draw_.polygon(
                [
                    (bx - s, by),
                    (bx + s, by),
                    (bx + s * 0.7, by + s * 0.5),
                    (bx - s * 0.7, by + s * 0.5),
                ],
                fill=(120, 70, 50),
            )
            self.draw_.polygon(
                [(bx, by - s * 1.6), (bx, by - s * 0.1), (bx + s * 0.9, by - s * 0.2)],
                fill=(250, 245, 235),
            )

    def features(self) -> None:
        kinds = ["tree"] * (6 if "plants" in self.moods else 1) + ["house"] * (
            5 if self.moods & {"city", "farm"} else 0
        )
        for _ in range(self.rng.randint(4, 9) + (6 if "plants" in self.moods else 0)):
            x = self.land_x(0.03, 0.97)
            y = self.ground_at(x)
            if y >= self.h - self.unit * 2:
                continue
            scale = self.unit * self.rng.uniform(0.8, 1.4)
            if self.rng.choice(kinds) == "tree":
                self.tree(x, y, scale)
            else:
                self.house(x, y, scale)

    def tree(self, x: float, y: float, s: float) -> None:
        trunk = (96, 64, 40)
        leaf = _rgb(
            0.28 + self.rng.uniform(-0.06, 0.06), 0.6, 0.45 if "night" not in self.moods else 0.25
        )
        self.draw_.rectangle((x - s * 0.8, y - s * 6, x + s * 0.8, y + s), fill=trunk)
        if self.rng.random() < 0.5:
            self.draw_.polygon(
                [(x, y - s * 18), (x - s * 5, y - s * 4), (x + s * 5, y - s * 4)], fill=leaf
            )
        else:
            self.draw_.ellipse((x - s * 5, y - s * 15, x + s * 5, y - s * 5), fill=leaf)

    def house(self, x: float, y: float, s: float) -> None:
        wall = _rgb(
            self.hue + self.rng.uniform(0, 0.3), 0.35, 0.9 if "night" not in self.moods else 0.5
        )
        roof = _rgb(self.hue + 0.5, 0.6, 0.55)
        w, h = s * 7, s * 6
        self.draw_.rectangle((x - w / 2, y - h, x + w / 2, y + s), fill=wall)
        self.draw_.polygon(
            [(x - w * 0.62, y - h), (x + w * 0.62, y - h), (x, y - h - s * 5)], fill=roof
        )
        window = (255, 220, 120) if "night" in self.moods else (90, 130, 170)
        self.draw_.rectangle((x - s * 1.2, y - h * 0.7, x + s * 1.2, y - h * 0.35), fill=window)

    def figures(self) -> None:
        for i in range(min(self.people, 3)):
            x = self.land_x(0.25, 0.75)
            y = min(self.ground_at(x) + self.unit * 8, self.h - self.unit * 3)
            s = self.unit * self.rng.uniform(1.6, 2.2)
            cloth = _rgb(self.hue + 0.15 * i + self.rng.uniform(0, 0.5), 0.65, 0.85)
            skin = self.rng.choice(
                [(241, 204, 170), (198, 144, 105), (141, 94, 64), (224, 172, 130)]
            )
            dark = (50, 40, 45)
            self.draw_.line(
                (x - s * 1.2, y, x - s * 0.6, y - s * 4), fill=dark, width=max(2, int(s * 0.6))
            )
            self.draw_.line(
                (x + s * 1.2, y, x + s * 0.6, y - s * 4), fill=dark, width=max(2, int(s * 0.6))
            )
            self.draw_.polygon(
                [
                    (x - s * 2.2, y - s * 3.5),
                    (x + s * 2.2, y - s * 3.5),
                    (x + s * 1.2, y - s * 9),
                    (x - s * 1.2, y - s * 9),
                ],
                fill=cloth,
            )
            arm = self.rng.choice([-1, 1])
            self.draw_.line(
                (x + arm * s * 1.1, y - s * 8.5, x + arm * s * 3.5, y - s * 11),
                fill=skin,
                width=max(2, int(s * 0.7)),
            )
            self.draw_.line(
                (x - arm * s * 1.1, y - s * 8.5, x - arm * s * 2.6, y - s * 5.5),
                fill=skin,
                width=max(2, int(s * 0.7)),
            )
            self.draw_.ellipse((x - s * 1.6, y - s * 12.5, x + s * 1.6, y - s * 9.3), fill=skin)
            self.draw_.chord(
                (x - s * 1.7, y - s * 12.8, x + s * 1.7, y - s * 9.6),
                180,
                360,
                fill=self.rng.choice([dark, (120, 70, 30), (230, 200, 120)]),
            )

    def mountains(self) -> None:
        """Peaks behind the hills, snow-capped."""
        for _ in range(self.rng.randint(2, 4)):
            x = self.rng.uniform(0, self.w)
            half = self.w * self.rng.uniform(0.15, 0.3)
            top = self.horizon - self.h * self.rng.uniform(0.2, 0.35)
            rock = _rgb(0.6 + self.rng.uniform(-0.05, 0.05), 0.18, 0.55)
            self.draw_.polygon(
                [(x - half, self.horizon + 4), (x, top), (x + half, self.horizon + 4)], fill=rock
            )
            cap = top + (self.horizon - top) * 0.28
            offset = half * 0.28
            self.draw_.polygon(
                [(x - offset, cap), (x, top), (x + offset, cap)], fill=(248, 248, 252)
            )

    def skyline(self) -> None:
        """A town's roofs and towers on the horizon, windows lit at night."""
        x = self.rng.uniform(-self.unit * 5, 0)
        night = "night" in self.moods
        while x < self.w:
            width = self.unit * self.rng.uniform(6, 14)
            height = self.unit * self.rng.uniform(8, 30)
            wall = _rgb(self.hue + self.rng.uniform(0.0, 0.15), 0.25, 0.35 if night else 0.75)
            base = self.horizon + self.unit * 6
            self.draw_.rectangle((x, base - height, x + width, base), fill=wall)
            if self.rng.random() < 0.3:  # a roof or a dome
                self.draw_.polygon(
                    [
                        (x, base - height),
                        (x + width, base - height),
                        (x + width / 2, base - height - width * 0.6),
                    ],
                    fill=_rgb(self.hue + 0.5, 0.5, 0.45),
                )
            lit = (255, 214, 120) if night else (110, 140, 170)
            for wy in range(
                int(base - height + self.unit * 2), int(base - self.unit * 2), int(self.unit * 4)
            ):
                for wx in range(
                    int(x + self.unit), int(x + width - self.unit * 2), int(self.unit * 3)
                ):
                    self.draw_.rectangle((wx, wy, wx + self.unit, wy + self.unit * 1.5), fill=lit)
            x += width + self.unit * self.rng.uniform(0, 3)

    def fence(self) -> None:
        y0 = self.h * 0.86
        wood = (150, 110, 70) if "night" not in self.moods else (80, 60, 45)
        step = self.unit * 6
        x = self.rng.uniform(0, step)
        while x < self.w:
            self.draw_.rectangle(
                (x, y0 - self.unit * 7, x + self.unit * 1.4, y0 + self.unit * 3), fill=wood
            )
            x += step
        for dy in (5.5, 2.0):
            self.draw_.rectangle(
                (0, y0 - self.unit * dy, self.w, y0 - self.unit * (dy - 1)), fill=wood
            )

    def rain(self) -> None:
        colour = (200, 210, 230)
        for _ in range(220):
            x, y = self.rng.uniform(0, self.w), self.rng.uniform(0, self.h)
            self.draw_.line(
                (x, y, x - self.unit, y + self.unit * 4),
                fill=colour,
                width=max(1, int(self.unit * 0.3)),
            )

    def foliage(self) -> None:
        """Big leaves in a front corner: the plants seen up close."""
        left = self.rng.random() < 0.5
        cx = self.w * (0.05 if left else 0.95)
        for i in range(5):
            angle = math.radians(self.rng.uniform(-80, 80) + (0 if left else 180))
            length = self.unit * self.rng.uniform(18, 30)
            tip = (
                cx + math.cos(angle) * length,
                self.h - math.sin(abs(angle)) * length - self.unit * 2,
            )
            leaf = _rgb(0.27 + 0.02 * i, 0.7, 0.55 if "night" not in self.moods else 0.3)
            mid = ((cx + tip[0]) / 2, (self.h + tip[1]) / 2)
            spread = self.unit * 5
            self.draw_.polygon(
                [(cx, self.h), (mid[0] - spread, mid[1]), tip, (mid[0] + spread, mid[1])], fill=leaf
            )
            self.draw_.line(
                (cx, self.h, tip[0], tip[1]),
                fill=_mix(leaf, (255, 255, 255), 0.3),
                width=max(1, int(self.unit * 0.4)),
            )
