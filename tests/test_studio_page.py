"""The studio page as served: HTML for browsers, the JSON description for everyone else, a strict
CSP, nothing inline, its files served from here, the form filled from the link, and nothing shown
that the admin token guards. (The page at work in a real browser: test_studio_browser.py.)"""

import re
from html.parser import HTMLParser

import pytest

from tests.helpers.wsgi import build_app

BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
)
SERVICE = {
    "service": "liroo-backend",
    "status": "ok",
    "health": "/health",
    "openapi": "/openapi.json",
}


@pytest.fixture(scope="module")
def client(offline_app):
    """One app for the module: its tests only read pages and files."""
    return offline_app.test_client()


class Page(HTMLParser):
    """What the page pulls in and anything inline."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.scripts, self.styles, self.inline, self.tags = [], [], [], []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if any(name == "style" or name.startswith("on") for name in attrs):
            self.inline.append((tag, attrs))
        if tag == "style":
            self.inline.append(tag)
        if tag == "script":
            self._in_script = True
            if "src" in attrs:
                self.scripts.append(attrs["src"])
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.styles.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append(("script", data))

    def find(self, tag, **wanted):
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and all(attrs.get(k) == v for k, v in wanted.items())
        ]


def test_a_browser_gets_the_studio_under_a_strict_content_security_policy(client):
    response = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "Accept" in response.headers["Vary"]
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["img-src"] == policy["media-src"] == "'self'"  # local media: this origin only
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"

    page = Page(response.get_data(as_text=True))
    assert page.inline == []  # no inline script, style or handler
    assert page.scripts == [
        "/studio/static/studio-results.js",
        "/studio/static/studio.js",
    ] and page.styles == ["/studio/static/studio.css"]
    for path, kind in (
        (page.scripts[0], "javascript"),
        (page.scripts[1], "javascript"),
        (page.styles[0], "text/css"),
        ("/studio/static/favicon.svg", "image/svg+xml"),
    ):
        asset = client.get(path)
        assert asset.status_code == 200 and kind in asset.content_type, path
        # nothing from elsewhere (the SVG's namespace is a name, not an address fetched)
        assert (
            re.search(
                rb"https?:|@import|url\(", asset.data.replace(b"http://www.w3.org/2000/svg", b"")
            )
            is None
        )
    assert {m["value"] for m in page.find("input", name="mode")} == {
        "comic",
        "story",
        "lecture",
        "study",
        "speech",
    }
    assert page.find("input", id="api-key") == []  # keys are off
    assert page.find("meter", id="memory-meter")  # the gauge's lines are not secret here
    missing = client.get("/studio/static/nothing.js")
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_found"


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, text/html;q=0.5"]
)
def test_other_clients_still_get_the_json_description_at_the_root(client, accept):
    response = client.get("/", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200 and response.get_json() == SERVICE
    assert client.get("/service", headers={"Accept": BROWSER_ACCEPT}).get_json() == SERVICE


def test_a_link_fills_in_the_form_and_asks_to_start(client):
    text = 'Bees <b>carry</b> "pollen" & grow fruit.'
    response = client.get(
        "/",
        query_string={
            "mode": "speech",
            "text": text,
            "voice": "Character",
            "level": "expert",
            "style": "Pixel Art",
            "run": "1",
        },
        headers={"Accept": BROWSER_ACCEPT},
    )
    html = response.get_data(as_text=True)
    page = Page(html)
    assert "checked" in page.find("input", name="mode", value="speech")[0]
    assert (
        "Bees &lt;b&gt;carry&lt;/b&gt; &#34;pollen&#34; &amp; grow fruit." in html
    )  # escaped, never markup
    assert page.find("form", id="studio-form")[0]["data-run"] == "1"
    selected = {attrs["value"] for attrs in page.find("option") if "selected" in attrs}
    assert selected == {"character", "pixel_art", "beginner"}  # an unknown level falls back
    assert (
        client.get("/?run=yes", headers={"Accept": BROWSER_ACCEPT})
        .get_data(as_text=True)
        .count('data-run="0"')
        == 1
    )


def test_with_keys_and_admin_token_the_page_asks_for_a_key_and_shows_no_thresholds(tmp_path):
    app = build_app(tmp_path / "media", api_keys="k-00000001", admin_token="a-00000001")
    client = app.test_client()
    response = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 200  # the page itself needs no key
    page = Page(response.get_data(as_text=True))
    assert page.find("input", id="api-key", type="password")
    assert page.find("form", id="studio-form")[0]["data-keys"] == "on"
    assert page.find("meter") == [] and "data-limit" not in response.get_data(as_text=True)


def test_media_elsewhere_is_allowed_for_pictures_and_audio_only(tmp_path):
    client = build_app(tmp_path / "media", base_url="https://media.example.org/liroo").test_client()
    policy = client.get("/", headers={"Accept": BROWSER_ACCEPT}).headers["Content-Security-Policy"]
    assert (
        "img-src 'self' https://media.example.org;" in policy
        and "media-src 'self' https://media.example.org;" in policy
    )
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy


def test_a_result_link_carries_its_id_to_the_page_and_a_malformed_one_is_dropped(client):
    def opened(query: str) -> str:
        html = client.get("/?" + query, headers={"Accept": BROWSER_ACCEPT}).get_data(as_text=True)
        return Page(html).find("form", id="studio-form")[0]["data-result"]

    assert opened("result=studio-0123456789abcdef") == "studio-0123456789abcdef"
    assert opened("result=%22%3E%3Cscript%3E") == ""
