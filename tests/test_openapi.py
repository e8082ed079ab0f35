"""/openapi.json: a valid OpenAPI 3.1 document listing every route, whose schemas real answers
satisfy.

Validity is checked with the OpenAPI 3.1 meta-schema schemathesis ships (and
by loading the document with schemathesis); real answers of a gunicorn
server are checked against the document with schemathesis's response
validation, and a short negative fuzz (schemathesis + hypothesis) checks that
input breaking the documented schemas gets a 4xx, never a 5xx.
"""

import json
import uuid

import jsonschema_rs
import pytest
import requests
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from liroo.api.openapi import IGNORED_ENDPOINTS, OPERATIONS, openapi_path
from liroo.settings import Settings
from tests.helpers.bodies import APP_LECTURE, APP_PROCESS, APP_STORY, APP_TTS, STUDENT_TEXT

SKIPPED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def app(offline_app):
    return offline_app


@pytest.fixture(scope="module")
def document(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_every_route_of_the_app_is_documented(app, document):
    routes = {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in IGNORED_ENDPOINTS
        for method in rule.methods - SKIPPED_METHODS
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == routes
    undocumented = [
        (path, method)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if op.get("x-undocumented")
    ]
    assert not undocumented, f"add these to liroo.api.openapi.OPERATIONS: {undocumented}"


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/memory",
        "/metrics",
        "/progress/{request_id}",
        "/jobs/{request_id}",
        "/media/{key}",
        "/generate_comic",
        "/generate_image",
        "/generate_story",
        "/process",
        "/generate_lecture",
        "/generate_tts",
        "/openapi.json",
    ],
)
def test_the_apps_routes_are_in_the_document(document, path):
    assert path in document["paths"], path


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    OPENAPI_31_VALIDATOR.validate(document)
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    loaded = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == sum(len(item) for item in document["paths"].values())

    names = set(document["components"]["schemas"])

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in names, ref


def test_errors_and_generation_options_are_documented(document):
    lecture = document["paths"]["/generate_lecture"]["post"]
    assert {"200", "202", "400", "413", "415", "422", "502", "503"} <= set(lecture["responses"])
    error_ref = lecture["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    error_schema = document["components"]["schemas"][error_ref.rsplit("/", 1)[1]]
    assert {"error", "code", "lecture_id"} <= set(error_schema["required"])
    headers = {p["name"] for p in lecture["parameters"] if p["in"] == "header"}
    assert headers == {"X-Request-ID", "Prefer"}
    voice = document["components"]["schemas"]["TtsRequest"]["properties"]["voice"]
    assert voice["enum"] == ["narrator", "character"]
    process = document["paths"]["/process"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert len(process["oneOf"]) == 5


def test_the_request_examples_are_valid_requests():
    for op in OPERATIONS.values():
        if op.example is not None:
            op.request.model_validate(op.example, context={"settings": Settings()})


# --- real answers against the document
# -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(offline_server):
    return offline_server


@pytest.fixture(scope="module")
def served(server):
    document = requests.get(server.url("/openapi.json"), timeout=10).json()
    return schemathesis.openapi.from_dict(document)


def check(served, path, method, response):
    """Raise if ``response`` does not match what the document says of ``method path`` at its status.
    """
    operation = served[path][method]
    assert str(response.status_code) in operation.definition.raw["responses"], (
        path,
        response.status_code,
    )
    operation.validate_response(response)
    return response


def test_real_answers_match_the_document(server, served):
    def post(path, body, **headers):
        return check(
            served,
            path,
            "POST",
            requests.post(server.url(path), json=body, headers=headers, timeout=120),
        )

    def get(path, template=None):
        return check(served, template or path, "GET", requests.get(server.url(path), timeout=30))

    rid = "doc-" + uuid.uuid4().hex
    post("/generate_story", APP_STORY, **{"X-Request-ID": rid})
    post("/generate_story", {"text": STUDENT_TEXT, "level": "expert"})
    for extra in (
        {},
        {"output_format": "flashcards"},
        {"output_format": "slideshow"},
        {"explain_again_mode": True, "original_paragraph_text": STUDENT_TEXT},
        {"dialogue_mode": True, "user_question": "Why?", "conversation_history": []},
    ):
        assert post("/process", {**APP_PROCESS, **extra}).status_code == 200
    post("/process", {"dialogue_mode": True})
    lecture = post("/generate_lecture", APP_LECTURE)
    post("/generate_lecture", {"text": ""})
    tts = post("/generate_tts", APP_TTS).json()
    post("/generate_tts", {**APP_TTS, "voice": "robot"})
    comic = post(
        "/generate_comic", {"text": STUDENT_TEXT, "level": "beginner", "image_style": "Comic Book"}
    )
    post("/generate_image", {"prompt": "A volcano at dawn"})
    post("/generate_image", {"prompt": "A volcano at dawn", "aspect_ratio": "7:7"})
    accepted = post(
        "/generate_tts", {**APP_TTS, "text": "Another sentence."}, Prefer="respond-async"
    )
    assert accepted.status_code == 202

    for path in ("/", "/health", "/memory", "/metrics", "/openapi.json"):
        get(path)
    get(f"/progress/{rid}", "/progress/{request_id}")
    get(f"/jobs/{rid}", "/jobs/{request_id}")
    get("/progress/" + uuid.uuid4().hex, "/progress/{request_id}")
    media = tts["audio_url"].split("/media/", 1)[1]
    get(f"/media/{media}", "/media/{key}")
    get("/media/nothing/here.wav", "/media/{key}")
    assert lecture.status_code == 200 and comic.status_code == 200


def test_an_answer_that_breaks_the_contract_fails_the_check(server, served):
    response = requests.post(server.url("/generate_story"), json=APP_STORY, timeout=120)
    check(served, "/generate_story", "POST", response)
    broken = response.json()
    del broken["story"]["chapters"][0]["imageUrl"]  # the app requires the key (null allowed)
    response._content = json.dumps(broken).encode()
    with pytest.raises(Exception, match="imageUrl"):
        served["/generate_story"]["POST"].validate_response(response)
