"""The studio keeps people's work, in a real headless Chromium against one real gunicorn (offline
provider, pictures slowed on purpose so that a request is still running when the test acts):
a reload mid-generation picks the request up again, recent results are listed and reopened after a
reload (or said to have expired), a link opens a result by id without making it again, Cancel stops
a generation, and on a 390 px phone nothing overflows and the progress comes into view."""

from __future__ import annotations

import pytest
import requests

from tests.servers import GunicornServer, slow_pictures_env
from tests.studio_browser import (
    ALL_PICTURES_LOADED_JS,
    COMIC_TEXT,
    PHONE_VIEWPORT,
    chromium,
    missing_browser,
    open_studio,
)

pytestmark = pytest.mark.skipif(
    missing_browser() is not None, reason=f"no browser test: {missing_browser()}"
)

FIRST_PANEL_JS = "() => document.querySelectorAll('#result .panel img').length > 0"


@pytest.fixture(scope="module")
def server():
    with GunicornServer(slow_pictures_env(0.5)) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def job(server, request_id) -> dict:
    return requests.get(server.url(f"/jobs/{request_id}"), timeout=10).json()


def test_a_reload_mid_generation_picks_the_request_up_and_history_reopens_it(server, browser):
    studio = open_studio(browser, server.base_url)
    studio.make("comic", COMIC_TEXT)
    studio.page.wait_for_function(FIRST_PANEL_JS)
    request_id = studio.request_id()
    assert job(server, request_id)["status"] == "running"

    studio.page.reload()  # by itself, with no click: following the same request again
    assert studio.wait_state("running", "done") in ("running", "done")
    assert studio.request_id() == request_id
    assert studio.wait_state("done", "failed") == "done"
    comic = job(server, request_id)["result"]["comic"]
    assert studio.page.locator("#result .panel").count() == len(comic["panel_layout"])
    assert len(studio.posts) == 1  # picked up, never sent again
    assert studio.page.inner_text("#result h2") == comic["comic_title"]

    # After another reload the result is listed under its title and opens again.
    studio.page.reload()
    entry = studio.page.locator(".history-entry").first
    assert entry.locator(".history-title").inner_text() == comic["comic_title"]
    assert studio.page.get_attribute("#run", "data-state") == "idle"  # nothing reopened by itself
    entry.click()
    assert studio.wait_state("done", "failed") == "done"
    studio.page.wait_for_function(ALL_PICTURES_LOADED_JS)
    shown = studio.page.eval_on_selector_all("#result .panel img", "imgs => imgs.map(i => i.src)")
    assert shown == [panel["image_url"] for panel in comic["panel_layout"]]
    assert len(studio.posts) == 1
    assert studio.page.get_attribute("#share-link", "href") == (f"/?result={request_id}&mode=comic")

    # Printed: the result alone.
    studio.page.emulate_media(media="print")
    for hidden in ("#studio-form", "#memory", "#history", "#request-id", ".download"):
        assert not studio.page.locator(hidden).first.is_visible(), hidden
    assert studio.page.locator("#result .panel img").first.is_visible()
    studio.page.emulate_media(media="screen")

    # A result the server no longer keeps: the page says it expired.
    studio.page.evaluate(
        """() => { const list = JSON.parse(localStorage.getItem('liroo-history'));
        list.unshift({id: 'studio-gone0000000000', mode: 'comic', title: 'Old', at: Date.now(),
                      state: 'done'});
        localStorage.setItem('liroo-history', JSON.stringify(list)); }"""
    )
    studio.page.reload()
    studio.page.locator(".history-entry").first.click()
    assert studio.wait_state("expired", "failed") == "expired"
    assert "expired" in studio.page.inner_text("#error-text")
    assert studio.page.is_hidden("#progress")
    assert studio.console_errors == [] or all("404" in e for e in studio.console_errors)


def test_a_link_to_a_result_opens_it_by_id_without_making_it_again(server, browser):
    made = requests.post(
        server.url("/generate_tts"), json={"text": "Rivers carry sand to the sea."}, timeout=60
    )
    assert made.status_code == 200, made.text
    request_id = made.headers["X-Request-ID"]

    reader = open_studio(browser, server.base_url, f"/?result={request_id}&mode=speech")
    assert reader.wait_state("done", "failed") == "done"
    assert reader.posts == []  # opened, not made again
    assert reader.page.get_attribute("#result audio", "src") == made.json()["audio_url"]
    assert reader.page.locator(".history-entry").count() == 1  # now in this browser's list too
    assert reader.console_errors == []


def test_cancel_stops_a_generation_and_the_page_says_so(server, browser):
    studio = open_studio(browser, server.base_url)
    studio.make("comic", COMIC_TEXT)
    studio.page.wait_for_function(FIRST_PANEL_JS)
    assert studio.page.evaluate("() => document.activeElement.id") == "cancel"
    studio.page.click("#cancel")
    assert studio.wait_state("cancelled", "done", "failed") == "cancelled"
    assert "cancelled" in studio.page.inner_text("#error-text")
    assert studio.page.is_hidden("#progress") and studio.page.is_hidden("#cancel")
    view = job(server, studio.request_id())
    assert view["status"] == "failed" and view["error_code"] == "cancelled"
    assert studio.page.evaluate("() => document.activeElement.id") == "generate"
    assert studio.console_errors == []


def test_on_a_phone_nothing_overflows_and_the_progress_comes_into_view(server, browser):
    studio = open_studio(browser, server.base_url, viewport=PHONE_VIEWPORT)
    width = "() => document.documentElement.scrollWidth"
    studio.page.wait_for_function(
        "() => /MB/.test(document.getElementById('memory-text').textContent)"
    )
    assert studio.page.evaluate(width) <= PHONE_VIEWPORT["width"]

    studio.make("comic", COMIC_TEXT)
    studio.page.wait_for_function(
        """() => { const box = document.getElementById('progress').getBoundingClientRect();
        return box.height > 0 && box.top >= 0 && box.bottom <= window.innerHeight; }"""
    )
    assert studio.page.evaluate("() => document.activeElement.id") == "cancel"
    assert studio.wait_state("done", "failed") == "done"
    studio.page.wait_for_function(ALL_PICTURES_LOADED_JS)
    assert studio.page.evaluate(width) <= PHONE_VIEWPORT["width"]
    assert studio.console_errors == []


def test_a_text_over_the_limit_is_counted_not_cut_and_not_sent(server, browser):
    studio = open_studio(browser, server.base_url)
    studio.page.fill("#text", "word " * 5_000)  # 25,000 characters, 24,999 once trimmed
    assert len(studio.page.input_value("#text")) == 25_000  # nothing cut
    assert studio.page.inner_text("#counter") == (
        "24,999 / 20,000 characters: 4,999 too many, shorten the text."
    )
    studio.page.click("#generate")
    assert "shorten it to 20,000 characters" in studio.page.inner_text("#error-text")
    assert studio.posts == []
    assert studio.page.evaluate("() => document.activeElement.id") == "text"
