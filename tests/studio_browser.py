"""The studio page driven in a real headless Chromium, for the browser tests and ``make
screenshot``.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it); Playwright's
Python package drives it through ``executable_path`` (``playwright install`` is
never run: it downloads a browser build, which this project does not do).

    python -m tests.studio_browser docs/studio.png --phone docs/studio-phone.png

(what `make screenshot` runs) starts a real gunicorn on the offline provider,
makes a comic in the page the way the browser test does (``finished_comic``),
at 1280 px and on a 390 px phone (the screen the phone shows once it is done),
and saves the screenshots.
"""

from __future__ import annotations

import argparse
import io
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 860}
PHONE_VIEWPORT = {"width": 390, "height": 844}
TIMEOUT_MS = 90_000
SCREENSHOT_COLOURS = 96

COMIC_TEXT = (
    "Volcanoes form where magma rises through cracks in the Earth's crust. When the pressure "
    "builds, "
    "the magma erupts as lava, ash and gas. Over many eruptions, layers of lava and ash pile up "
    "into a mountain."
)

# What the page shows first once a run started: a drawn panel while the request still runs, or the
# end.
FIRST_SIGHT_JS = """() => {
  const state = document.getElementById('run').dataset.state;
  if (state === 'done' || state === 'failed') return state;
  const img = document.querySelector('#result .panel img');
  if (state === 'running' && img && img.complete && img.naturalWidth > 0
      && img.getBoundingClientRect().height > 0)
    return 'panel-while-running';
  return false;
}"""
ALL_PICTURES_LOADED_JS = """() => {
  const imgs = Array.from(document.querySelectorAll('#result img'));
  const loaded = imgs.every((img) => img.complete && img.naturalWidth > 0);
  return imgs.length > 0 && loaded ? imgs.length : false;
}"""


def missing_browser() -> str | None:
    """Why no browser test can run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -r requirements-dev.txt)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (Debian's chromium package; .ci/run installs it)"
    return None


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Studio:
    """One page of the studio, with everything it complained about."""

    page: object
    base_url: str
    console_errors: list[str] = field(default_factory=list)
    # headers of every generation POST the page sent
    posts: list[dict] = field(default_factory=list)

    def goto(self, path: str = "/") -> "Studio":
        self.page.goto(self.base_url + path)
        return self

    def make(self, mode: str, text: str) -> None:
        self.page.fill("#text", text)
        # the radio is styled as a pill
        self.page.check(f"input[name=mode][value={mode}]", force=True)
        self.page.click("#generate")

    def wait_state(self, *states: str) -> str:
        handle = self.page.wait_for_function(
            "(states) => states.includes(document.getElementById('run').dataset.state) && "
            "document.getElementById('run').dataset.state",
            arg=list(states),
            timeout=TIMEOUT_MS,
        )
        return handle.json_value()

    def request_id(self) -> str:
        return self.page.inner_text("#request-id").removeprefix("Request ").strip()


def open_studio(browser, base_url: str, path: str = "/", viewport: dict = VIEWPORT) -> Studio:
    """A page in a fresh browser profile (its own localStorage)."""
    page = browser.new_page(viewport=viewport)
    studio = Studio(page, base_url)
    page.on(
        "console",
        lambda message: message.type == "error" and studio.console_errors.append(message.text),
    )
    page.on("pageerror", lambda error: studio.console_errors.append(f"uncaught: {error}"))
    page.on(
        "request", lambda request: request.method == "POST" and studio.posts.append(request.headers)
    )
    return studio.goto(path)


def finished_comic(studio: Studio, text: str = COMIC_TEXT) -> dict:
    """Make a comic in the page and wait for every picture; what was seen on the way."""
    studio.make("comic", text)
    first_sight = studio.page.wait_for_function(FIRST_SIGHT_JS, timeout=TIMEOUT_MS).json_value()
    final = studio.wait_state("done", "failed")
    pictures = (
        studio.page.wait_for_function(ALL_PICTURES_LOADED_JS, timeout=TIMEOUT_MS).json_value()
        if final == "done"
        else 0
    )
    return {
        "first_sight": first_sight,
        "final": final,
        "pictures": pictures,
        "panels": studio.page.locator("#result .panel").count(),
    }


def save_screenshot(studio: Studio, path: str | Path, full_page: bool = True) -> Path:
    """The page as a small palette PNG (the same picture whether for a test folder or docs/)."""
    from PIL import Image

    path = Path(path)
    raw = studio.page.screenshot(full_page=full_page)
    with Image.open(io.BytesIO(raw)) as shot:
        small = shot.convert("RGB").quantize(
            SCREENSHOT_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)
    return path


def main() -> None:
    from tests.servers import GunicornServer

    parser = argparse.ArgumentParser(description="Screenshot of the studio with a finished comic.")
    parser.add_argument("out", nargs="?", default="docs/studio.png")
    parser.add_argument("--phone", help="also the phone's screen, 390x844, saved here")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        raise SystemExit(f"cannot take the screenshot: {reason}")
    shots = [(args.out, VIEWPORT, True)]
    if args.phone:
        shots.append((args.phone, PHONE_VIEWPORT, False))
    with GunicornServer() as server, chromium() as browser:
        for out, viewport, full_page in shots:
            studio = open_studio(browser, server.base_url, viewport=viewport)
            seen = finished_comic(studio)
            if seen["final"] != "done" or studio.console_errors:
                errors = studio.console_errors
                raise SystemExit(f"the comic did not finish cleanly: {seen}, {errors}")
            saved = save_screenshot(studio, out, full_page=full_page)
            print(f"{saved}: {saved.stat().st_size} bytes, {seen['panels']} panels")


if __name__ == "__main__":
    main()
