"""Progress that shows what is finished (`partial`) while a request runs, and async jobs that end.

The job stores keep a running job's finished items (SQLite, and the real Redis on db 15); a real
gunicorn on the offline provider, whose pictures are slowed on purpose (LIROO_OFFLINE_IMAGE_DELAY_S,
one at a time), shows a comic's panels, a story's pictures and a lecture's clips in /progress and
/jobs before the end, while the fields the app decodes stay as they were (tests/contract.py); on
the loopback Gemini, whose pictures are held mid-way, what a running job shows matches the
`PartialResults` schema of /openapi.json.
"""

from __future__ import annotations

import uuid

import pytest
import requests
import schemathesis

from liroo import create_app
from liroo.api.runner import job_view
from liroo.generation.context import Progress
from liroo.jobs import FAILED, SUCCEEDED, FallbackJobStore, LocalJobStore, RedisJobStore
from liroo.settings import Settings
from tests import contract
from tests.fake_gemini import gemini_env
from tests.helpers.dockerfile import image_env
from tests.servers import GunicornServer, ended_job, slow_pictures_env, wait_for

REDIS_URL = "redis://127.0.0.1:6379/15"  # this module's own db
TEXT = (
    "Bees visit flowers to drink nectar. Pollen sticks to their hairy bodies and rubs off on the "
    "next "
    "flower, so the plant can make seeds and fruit. Without bees many fruits would not grow."
)


def new_id() -> str:
    return "partial-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def request_context(tmp_path_factory):
    """job_view makes media paths absolute with the request's host: it runs inside a request."""
    app = create_app(Settings.from_env({}, media_dir=str(tmp_path_factory.mktemp("media"))))
    with app.test_request_context("/progress/x"):
        yield


@pytest.fixture(params=["local", "redis", "fallback"])
def store(request, tmp_path):
    local = LocalJobStore(str(tmp_path / "jobs.sqlite3"), ttl_s=60, running_ttl_s=120)
    if request.param == "local":
        return local
    redis_store = RedisJobStore(REDIS_URL, ttl_s=60, running_ttl_s=120)
    return redis_store if request.param == "redis" else FallbackJobStore(redis_store, local)


def test_a_running_job_keeps_its_finished_items_and_shows_them_until_it_ends(
    store, request_context
):
    rid = new_id()
    store.claim(rid, "/generate_comic", "fp")
    assert "partial" not in job_view(store.get(rid), with_result=True)  # nothing finished yet

    progress = Progress(store, rid)
    progress.plan(5, "Script written")
    progress.advance(
        "Drawing panel 1 of 3",
        "panel 2: ready",
        finished=("panels", {"panel_id": 2, "image_url": "u2"}),
    )
    # a failed picture adds nothing
    progress.advance("Drawing panel 2 of 3", "panel 1: image_failed")
    progress.advance(
        "Drawing panel 3 of 3",
        "panel 1: ready",
        finished=("panels", {"panel_id": 1, "image_url": "u1"}),
    )
    expected = {"panels": [{"panel_id": 2, "image_url": "u2"}, {"panel_id": 1, "image_url": "u1"}]}
    assert store.get(rid).partial_items() == expected
    for with_result in (False, True):
        view = contract.decode_progress(job_view(store.get(rid), with_result=with_result))
        assert view["partial"] == expected and view["step_number"] == 3

    store.progress(rid, "Comic ready", 5, 5, "")  # a step without items keeps the ones shown
    assert store.get(rid).partial_items() == expected
    store.finish(rid, SUCCEEDED, 200, {"success": True})
    assert "partial" not in job_view(store.get(rid), with_result=True)  # the result says it all now


@pytest.fixture(scope="module")
def slow_pictures():
    with GunicornServer(slow_pictures_env(0.6)) as server:
        yield server


def start_async(server, path, body) -> str:
    rid = new_id()
    response = requests.post(
        server.url(path),
        json=body,
        timeout=30,
        headers={"X-Request-ID": rid, "Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    return rid


def shown_while_running(server, rid, kind):
    """The first /progress answer that shows a finished `kind` while the request still runs."""

    def look():
        view = requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
        assert view["status"] == "running", f"ended before any {kind} was shown: {view}"
        return view if view.get("partial", {}).get(kind) else None

    view = contract.decode_progress(wait_for(look, timeout=60, what=f"a finished {kind}"))
    running_job = requests.get(server.url(f"/jobs/{rid}"), timeout=10).json()
    assert running_job["status"] == "running" and running_job["partial"][kind]
    return view["partial"]


def finished(server, rid) -> dict:
    view = ended_job(server, rid, timeout=120)
    assert view["status"] == "succeeded" and view["result_status"] == 200, view
    assert (
        "partial" not in view
        and "partial" not in requests.get(server.url(f"/progress/{rid}"), timeout=10).json()
    )
    return view["result"]


def fetch(url: str, kind: str) -> None:
    response = requests.get(url, timeout=10)
    assert (
        response.status_code == 200
        and response.headers["Content-Type"].startswith(kind)
        and response.content
    )


def test_a_comic_shows_each_panel_in_progress_as_it_is_drawn(slow_pictures):
    rid = start_async(slow_pictures, "/generate_comic", {"text": TEXT, "level": "beginner"})
    partial = shown_while_running(slow_pictures, rid, "panels")
    first = partial["panels"][0]
    assert first["panel_id"] == 1 and set(first) == {"panel_id", "image_url", "scene", "dialogue"}
    fetch(first["image_url"], "image/")
    comic = contract.decode_comic(finished(slow_pictures, rid))["comic"]
    assert comic["panel_layout"][0]["image_url"] == first["image_url"]
    assert comic["panel_layout"][0]["dialogue"] == first["dialogue"]


def test_a_story_shows_its_pictures_in_progress(slow_pictures):
    rid = start_async(slow_pictures, "/generate_story", {"text": TEXT, "level": "beginner"})
    partial = shown_while_running(slow_pictures, rid, "cover")  # the cover is drawn first
    fetch(partial["cover"][0]["imageUrl"], "image/")
    story = contract.decode_story(finished(slow_pictures, rid))["story"]
    assert story["coverImageUrl"] == partial["cover"][0]["imageUrl"]
    assert all(chapter["imageUrl"] for chapter in story["chapters"])


def test_a_lecture_shows_its_narration_in_progress(slow_pictures):
    rid = start_async(slow_pictures, "/generate_lecture", {"text": TEXT, "level": "beginner"})
    # clips come while pictures are drawn
    partial = shown_while_running(slow_pictures, rid, "audio_files")
    clip = partial["audio_files"][0]
    assert clip["type"] in {"title", "section_title", "section_script"} and clip["text"]
    fetch(clip["url"], "audio/mpeg")
    lecture = contract.decode_lecture(finished(slow_pictures, rid))
    final = {(a["type"], a.get("section"), a["url"]) for a in lecture["audio_files"]}
    assert (clip["type"], clip.get("section"), clip["url"]) in final


def test_an_async_job_whose_model_refuses_ends_as_a_503_with_retry_after(fake_gemini, start_server):
    """Async jobs run in a pool thread: recording their failure must work there as in a request."""
    server = start_server(
        gemini_env(fake_gemini, LIROO_GEMINI_RETRY_ATTEMPTS=2, LIROO_GEMINI_RETRY_MAX_S=0.2)
    )
    fake_gemini.fail("http", times=2, status=429, retry_after=4, operation="text")
    rid = start_async(server, "/generate_comic", {"text": TEXT})
    view = ended_job(server, rid, timeout=30)
    assert view["status"] == FAILED and view["error_code"] == "provider_rate_limited"
    assert view["result_status"] == 503
    body = contract.decode_error(view["result"])
    assert body["retry_after_s"] == 4 and body["request_id"] == rid


def test_a_lecture_numbers_its_pictures_in_progress_from_1_like_its_clips(slow_pictures):
    rid = start_async(slow_pictures, "/generate_lecture", {"text": TEXT, "level": "beginner"})
    partial = shown_while_running(slow_pictures, rid, "pictures")
    lecture = contract.decode_lecture(finished(slow_pictures, rid))
    sections = lecture["lecture"]["sections"]
    for picture in partial["pictures"]:
        section = sections[picture["section"] - 1]  # as audio_files' section is read
        assert picture["section"] >= 1
        assert (picture["title"], picture["image_url"]) == (section["title"], section["image_url"])


@pytest.fixture(scope="module")
def held_server(module_fake_gemini):
    """A real gunicorn on the loopback Gemini, whose pictures a test can hold mid-way."""
    with GunicornServer(gemini_env(module_fake_gemini)) as server:
        yield server


def undocumented_keys(document: dict, partial: dict) -> set[str]:
    """Kinds and item keys of ``partial`` that the document's PartialResults does not name."""
    schemas = document["components"]["schemas"]
    kinds = schemas["PartialResults"]["properties"]
    extra = set(partial) - set(kinds)
    for kind, items in partial.items():
        if kind in kinds:
            item_schema = schemas[kinds[kind]["items"]["$ref"].rsplit("/", 1)[1]]
            extra |= {f"{kind}.{key}" for item in items for key in item}
            extra -= {f"{kind}.{key}" for key in item_schema["properties"]}
    return extra


def partial_progress(server, rid: str, kinds: list[set[str]]) -> requests.Response:
    """The first /progress answer of the running ``rid`` that shows every kind of one of
    ``kinds``."""

    def look():
        response = requests.get(server.url(f"/progress/{rid}"), timeout=10)
        view = response.json()
        assert view["status"] == "running", view  # held: it cannot end yet
        made = set(view.get("partial", {}))
        return response if any(wanted <= made for wanted in kinds) else None

    return wait_for(look, timeout=60, what=f"partial results of {rid}")


def test_live_partial_results_match_the_documented_schema(held_server, module_fake_gemini):
    """What /progress and /jobs show of a running comic, lecture and story satisfies
    /openapi.json, with no kind or key it does not document."""
    fake = module_fake_gemini
    fake.reset()
    document = requests.get(held_server.url("/openapi.json"), timeout=10).json()
    progress = document["components"]["schemas"]["ProgressResponse"]["properties"]["partial"]
    assert progress["$ref"] == "#/components/schemas/PartialResults"
    served = schemathesis.openapi.from_dict(document)
    shown: set[str] = set()
    for path, body, kinds in (
        ("/generate_comic", {"text": TEXT, "level": "beginner"}, [{"panels"}]),
        ("/generate_lecture", {"text": TEXT, "level": "beginner"}, [{"pictures", "audio_files"}]),
        ("/generate_story", {"text": TEXT, "level": "beginner"}, [{"cover"}, {"chapters"}]),
    ):
        fake.hold("image", let_through=1)  # one picture made, the others wait for the test
        rid = start_async(held_server, path, body)
        live = partial_progress(held_server, rid, kinds)
        served["/progress/{request_id}"]["GET"].validate_response(live)
        job = requests.get(held_server.url(f"/jobs/{rid}"), timeout=10)
        served["/jobs/{request_id}"]["GET"].validate_response(job)
        for view in (live.json(), job.json()):
            assert view["status"] == "running" and not undocumented_keys(document, view["partial"])
        shown |= set(live.json()["partial"])
        fake.release("image")
        finished(held_server, rid)
    assert {"panels", "pictures", "audio_files"} <= shown and shown & {"cover", "chapters"}


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on ``port`` (Linux's /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_the_server_listens_on_this_machine_only_unless_a_setting_opens_it(slow_pictures):
    # gunicorn.conf.py as `make run` starts it, with no LIROO_BIND: loopback, 127.0.0.1
    assert listening_addresses(slow_pictures.port) == {"0100007F"}
    assert Settings.from_env({"LIROO_BIND": "0.0.0.0"}).bind_host == "0.0.0.0"
    assert image_env()["LIROO_BIND"] == "0.0.0.0"  # the container (so Cloud Run): every interface
