"""The studio page in a real headless Chromium against real gunicorn (tests/studio_browser.py drives
it).

Skipped, with the reason shown, where Debian's chromium or Playwright's package is missing.
The comic, study page and lecture run on the offline provider, whose pictures are made
slow on purpose (LIROO_OFFLINE_IMAGE_DELAY_S, one at a time) so that panels arriving
before the end can be seen (and a request is still running when a test reloads or cancels);
the 503 comes from the loopback Gemini's 429s through the SDK. One server and one browser serve
the module; each page is a fresh browser profile (its own localStorage).
"""

from __future__ import annotations

import re

import pytest
import requests

from liroo.settings import Settings
from tests.fake_gemini import gemini_env
from tests.servers import GunicornServer, slow_pictures_env
from tests.studio_browser import (
    ALL_PICTURES_LOADED_JS,
    COMIC_TEXT,
    PHONE_VIEWPORT,
    chromium,
    finished_comic,
    missing_browser,
    open_studio,
    save_screenshot,
)

FIRST_PANEL_JS = "() => document.querySelectorAll('#result .panel img').length > 0"

pytestmark = pytest.mark.skipif(
    missing_browser() is not None, reason=f"no browser test: {missing_browser()}"
)

STUDY_TEXT = (
    "Plants make their own food by photosynthesis. Their leaves take in sunlight, water from the "
    "roots "
    "and carbon dioxide from the air, and turn them into sugar. Oxygen is given off as a "
    "by-product, "
    "which animals breathe."
)
LECTURE_TEXT = (
    "The water cycle moves water around the Earth. The sun heats oceans and lakes, and water "
    "evaporates into vapour. The vapour cools and condenses into clouds, then falls as rain or "
    "snow."
)


@pytest.fixture(scope="module")
def offline():
    with GunicornServer(slow_pictures_env(0.6)) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def job_view(server, request_id) -> dict:
    return requests.get(server.url(f"/jobs/{request_id}"), timeout=10).json()


def job(server, request_id, **headers):
    view = requests.get(server.url(f"/jobs/{request_id}"), headers=headers, timeout=10).json()
    assert view["status"] == "succeeded", view
    return view["result"]


def test_a_comic_shows_each_panel_as_it_is_drawn_and_every_picture_loads(
    offline, browser, tmp_path
):
    studio = open_studio(browser, offline.base_url)
    seen = finished_comic(studio)

    # panel 1 was on screen before the request ended
    assert seen["first_sight"] == "panel-while-running"
    assert seen["final"] == "done"
    comic = job(offline, studio.request_id())["comic"]
    assert seen["panels"] == len(comic["panel_layout"]) >= 3
    assert seen["pictures"] == seen["panels"]  # every <img> complete with naturalWidth > 0
    shown = studio.page.eval_on_selector_all("#result .panel img", "imgs => imgs.map(i => i.src)")
    assert shown == [panel["image_url"] for panel in comic["panel_layout"]]
    first = comic["panel_layout"][0]
    assert next(iter(first["dialogue"].values())) in studio.page.inner_text(
        "#result .panel >> nth=0"
    )

    # The memory gauge reads /health against the lines the governor works with.
    studio.page.wait_for_function(
        "() => /^\\d+ MB$/.test(document.getElementById('memory-text').textContent)"
    )
    assert re.fullmatch(
        r"warning \d+ · cleanup \d+ · limit \d+ MB", studio.page.inner_text(".memory-lines")
    )
    assert studio.page.get_attribute("#memory", "data-state") == "normal"
    assert float(studio.page.eval_on_selector("#memory-meter", "m => m.value")) > 0

    shot = save_screenshot(studio, tmp_path / "studio-comic.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert studio.console_errors == []


def test_a_shared_link_fills_the_form_and_starts_a_study_page_whose_quiz_can_be_answered(
    offline, browser
):
    query = requests.models.RequestEncodingMixin._encode_params(
        {"mode": "study", "level": "moderate", "text": STUDY_TEXT, "run": "1"}
    )
    studio = open_studio(browser, offline.base_url, "/?" + query)
    assert studio.page.is_checked("input[name=mode][value=study]")
    assert studio.page.input_value("#text") == STUDY_TEXT
    assert studio.wait_state("done", "failed") == "done"
    assert studio.posts and studio.posts[0]["x-request-id"] == studio.request_id()

    questions = [
        b
        for b in job(offline, studio.request_id())["blocks"]
        if b["type"] == "multipleChoiceQuestion"
    ]
    assert questions and studio.page.locator("#result .question").count() == len(questions)
    right = questions[0]
    quiz = studio.page.locator("#result .question").nth(0)
    quiz.locator(f"input[value='{right['correctAnswerID']}']").check()
    quiz.locator("button").click()
    feedback = quiz.locator(".feedback")
    assert feedback.inner_text().startswith("Right!")
    assert right["explanation"] in feedback.inner_text()
    assert quiz.locator("input:disabled").count() == len(right["options"])  # answered once
    assert len(questions) > 1  # the offline provider writes three or more
    other = questions[1]
    wrong = next(o for o in other["options"] if o["id"] != other["correctAnswerID"])
    quiz = studio.page.locator("#result .question").nth(1)
    quiz.locator(f"input[value='{wrong['id']}']").check()
    quiz.locator("button").click()
    assert quiz.locator(".feedback").inner_text().startswith("Not quite")
    assert other["explanation"] in quiz.locator(".feedback").inner_text()

    # Every question answered: a score, and the quiz can be taken again.
    assert studio.page.is_hidden(".quiz-score")
    for index, block in list(enumerate(questions))[2:]:
        quiz = studio.page.locator("#result .question").nth(index)
        quiz.locator(f"input[value='{block['correctAnswerID']}']").check()
        quiz.locator("button").click()
    score = f"Score: {len(questions) - 1} of {len(questions)}"
    assert studio.page.inner_text(".quiz-score strong") == score
    studio.page.click(".quiz-again")
    assert studio.page.locator("#result .question input:disabled").count() == 0
    assert studio.page.is_hidden(".quiz-score")
    assert studio.console_errors == []


def test_speech_takes_a_whole_story_where_the_other_modes_take_the_usual_limit(offline, browser):
    studio = open_studio(browser, offline.base_url)
    defaults = Settings.from_env({})

    def limit() -> int:
        counter = studio.page.inner_text("#counter")  # "0 / 20,000 characters"
        return int(counter.split("/")[1].split()[0].replace(",", ""))

    assert limit() == defaults.max_input_chars  # comic, the first mode
    studio.page.check("input[name=mode][value=speech]", force=True)
    assert limit() == defaults.max_long_text_chars > defaults.max_input_chars
    studio.page.check("input[name=mode][value=story]", force=True)
    assert limit() == defaults.max_input_chars


def test_a_lecture_shows_its_sections_with_playable_audio(offline, browser):
    studio = open_studio(browser, offline.base_url)
    studio.make("lecture", LECTURE_TEXT)
    assert studio.wait_state("done", "failed") == "done"
    lecture = job(offline, studio.request_id())
    players = studio.page.locator("#result audio")
    assert (
        players.count()
        == len(lecture["audio_files"])
        == 1 + 2 * len(lecture["lecture"]["sections"])
    )
    assert studio.page.locator("#result .lecture-section").count() == len(
        lecture["lecture"]["sections"]
    )
    studio.page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#result audio'))"
        ".every(a => !a.error && a.readyState >= 1 && a.duration > 0)",
        timeout=30_000,
    )
    studio.page.wait_for_function(ALL_PICTURES_LOADED_JS, timeout=30_000)
    # "Play all": the first clip plays, and when it ends the next one starts by itself.
    studio.page.click(".play-all")
    studio.page.wait_for_function(
        "() => document.querySelector('#result audio').currentTime > 0", timeout=30_000
    )
    studio.page.evaluate(  # skip to the last moments of the first clip
        "() => { const a = document.querySelector('#result audio'); "
        "a.currentTime = Math.max(a.duration - 0.2, 0); }"
    )
    studio.page.wait_for_function(
        "() => { const [first, second] = document.querySelectorAll('#result audio'); "
        "return first.paused && !second.paused && second.currentTime > 0; }",
        timeout=30_000,
    )
    assert studio.page.inner_text(".play-all") == "Stop"
    studio.page.click(".play-all")
    assert studio.page.evaluate(
        "() => Array.from(document.querySelectorAll('#result audio')).every(a => a.paused)"
    )
    assert studio.console_errors == []


KEY, ADMIN = "studio-key-0001", "admin-token-0001"


@pytest.fixture(scope="module")
def keyed(module_fake_gemini):
    """The loopback Gemini behind the SDK, with API keys and an admin token: one server for the
    tests below (each resets the fake)."""
    env = gemini_env(
        module_fake_gemini,
        LIROO_GEMINI_RETRY_ATTEMPTS=2,
        LIROO_GEMINI_RETRY_MAX_S=0.2,
        LIROO_API_KEYS=KEY,
        LIROO_ADMIN_TOKEN=ADMIN,
    )
    with GunicornServer(env) as server:
        yield server


def test_a_503_counts_its_retry_after_down_and_the_retry_reuses_the_request_id(
    keyed, module_fake_gemini, browser
):
    server, fake_gemini = keyed, module_fake_gemini
    fake_gemini.reset()
    fake_gemini.fail("http", times=2, status=429, retry_after=3, operation="text")  # every attempt
    studio = open_studio(browser, server.base_url)
    studio.page.fill("#api-key", KEY)
    studio.make("comic", "Bees carry pollen from flower to flower, and so fruit can grow.")
    assert studio.wait_state("done", "failed") == "failed"
    assert "(provider_rate_limited)" in studio.page.inner_text("#error-text")
    countdown = studio.page.locator("#countdown")
    assert countdown.is_visible() and studio.page.is_disabled("#retry")
    studio.page.wait_for_function(
        "() => /retry in 1 s/.test(document.getElementById('countdown').textContent)"
    )
    studio.page.wait_for_function(
        "() => !document.getElementById('retry').disabled", timeout=10_000
    )
    assert countdown.inner_text() == "You can try again now."
    assert studio.page.is_hidden("#progress")  # no "Sending 0%" beside the error
    studio.page.fill("#text", "")  # the retry still has its text, and puts it back

    studio.page.click("#retry")
    assert studio.wait_state("done", "failed") == "done"
    assert studio.page.input_value("#text").startswith("Bees carry pollen")
    ids = [headers["x-request-id"] for headers in studio.posts]
    assert len(ids) == 2 and ids[0] == ids[1] == studio.request_id()
    assert job(server, ids[0], **{"X-API-Key": KEY})["comic"]["panel_layout"]
    studio.page.wait_for_function(ALL_PICTURES_LOADED_JS)
    assert studio.console_errors == []


def test_with_keys_and_an_admin_token_the_page_asks_for_a_key_and_nothing_it_may_not_show(
    keyed, module_fake_gemini, browser
):
    server = keyed
    module_fake_gemini.reset()
    studio = open_studio(browser, server.base_url)
    fetched = []
    studio.page.on("request", lambda request: fetched.append(request.url))
    assert (
        studio.page.locator("#memory-meter, .memory-lines").count() == 0
    )  # no lines: they are the admin's
    studio.page.wait_for_function(
        "() => /MB, normal/.test(document.getElementById('memory-text').textContent)"
    )

    studio.make("comic", "Magnets pull on iron and steel.")
    assert studio.wait_state("done", "failed") == "failed"
    assert "(unauthorized)" in studio.page.inner_text("#error-text")
    assert studio.page.evaluate("() => document.activeElement.id") == "api-key"
    studio.page.fill("#api-key", "studio-key-0001")
    studio.page.click("#retry")
    assert studio.wait_state("done", "failed") == "done"  # its progress polls carried the key too
    assert (
        studio.page.evaluate("() => sessionStorage.getItem('liroo-api-key')") == "studio-key-0001"
    )

    # A ?run=1 link opened in this tab, where the key is stored, waits for a click.
    posts = len(studio.posts)
    studio.goto("/?mode=comic&run=1&text=Magnets+pull+on+nickel+too.")
    assert studio.page.is_visible("#run-note")
    assert studio.page.evaluate("() => document.activeElement.id") == "generate"
    assert studio.page.get_attribute("#run", "data-state") == "idle"
    assert len(studio.posts) == posts
    # localStorage keeps the history of ids, never the key
    assert studio.page.evaluate(
        "() => Object.values(localStorage).every(v => !v.includes('studio-key-0001'))"
    )
    assert not [url for url in fetched if re.search(r"/(memory|metrics)\b", url)]
    # The only complaint is the browser's note of the refused first POST.
    assert [e for e in studio.console_errors if "status of 401" not in e] == []


# --- keeping work, cancel, phones --------------------------------------------------------


def test_a_reload_mid_generation_picks_the_request_up_and_history_reopens_it(offline, browser):
    studio = open_studio(browser, offline.base_url)
    studio.make("comic", COMIC_TEXT)
    studio.page.wait_for_function(FIRST_PANEL_JS)
    request_id = studio.request_id()
    assert job_view(offline, request_id)["status"] == "running"

    studio.page.reload()  # by itself, with no click: following the same request again
    assert studio.wait_state("running", "done") in ("running", "done")
    assert studio.request_id() == request_id
    assert studio.wait_state("done", "failed") == "done"
    comic = job_view(offline, request_id)["result"]["comic"]
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


def test_a_link_to_a_result_opens_it_by_id_without_making_it_again(offline, browser):
    made = requests.post(
        offline.url("/generate_tts"), json={"text": "Rivers carry sand to the sea."}, timeout=60
    )
    assert made.status_code == 200, made.text
    request_id = made.headers["X-Request-ID"]

    reader = open_studio(browser, offline.base_url, f"/?result={request_id}&mode=speech")
    assert reader.wait_state("done", "failed") == "done"
    assert reader.posts == []  # opened, not made again
    assert reader.page.get_attribute("#result audio", "src") == made.json()["audio_url"]
    assert reader.page.locator(".history-entry").count() == 1  # now in this browser's list too
    assert reader.console_errors == []


def test_cancel_stops_a_generation_and_the_page_says_so(offline, browser):
    studio = open_studio(browser, offline.base_url)
    studio.make("comic", COMIC_TEXT)
    studio.page.wait_for_function(FIRST_PANEL_JS)
    assert studio.page.evaluate("() => document.activeElement.id") == "cancel"
    studio.page.click("#cancel")
    assert studio.wait_state("cancelled", "done", "failed") == "cancelled"
    assert "cancelled" in studio.page.inner_text("#error-text")
    assert studio.page.is_hidden("#progress") and studio.page.is_hidden("#cancel")
    view = job_view(offline, studio.request_id())
    assert view["status"] == "failed" and view["error_code"] == "cancelled"
    assert studio.page.evaluate("() => document.activeElement.id") == "generate"
    assert studio.console_errors == []


def test_on_a_phone_nothing_overflows_and_the_progress_comes_into_view(offline, browser):
    studio = open_studio(browser, offline.base_url, viewport=PHONE_VIEWPORT)
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


def test_a_text_over_the_limit_is_counted_not_cut_and_not_sent(offline, browser):
    studio = open_studio(browser, offline.base_url)
    studio.page.fill("#text", "word " * 5_000)  # 25,000 characters, 24,999 once trimmed
    assert len(studio.page.input_value("#text")) == 25_000  # nothing cut
    assert studio.page.inner_text("#counter") == (
        "24,999 / 20,000 characters: 4,999 too many, shorten the text."
    )
    studio.page.click("#generate")
    assert "shorten it to 20,000 characters" in studio.page.inner_text("#error-text")
    assert studio.posts == []
    assert studio.page.evaluate("() => document.activeElement.id") == "text"
