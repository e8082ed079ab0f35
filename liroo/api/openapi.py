"""GET /openapi.json: an OpenAPI 3.1 document built from the app's routes and pydantic models.

The paths come from ``app.url_map`` (so no route can be missed: one without
an entry in OPERATIONS still appears, marked ``x-undocumented``, and a test
fails on it); the schemas come from the request models (``models.py``,
validation mode) and the response models (``liroo/generation/results.py``,
serialization mode) through ``pydantic.json_schema.models_json_schema``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import routes
from ..generation import results as r
from ..requestid import HEADER as REQUEST_ID_HEADER
from ..requestid import REQUEST_ID_SCHEMA
from ..routes import Route

bp = Blueprint("openapi", __name__)

TITLE = "Liroo backend"
VERSION = "1.0.0"
MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "audio/wav")
# Flask's own route for a static folder this app does not have: nothing to document.
IGNORED_ENDPOINTS = {"static"}

_STATUS_TEXT = {
    400: "The body is not JSON, a required field is missing, or the request id is malformed.",
    401: "An API key is required (only when LIROO_API_KEYS is set) or the admin token (for "
    "/memory, /metrics).",
    403: "The credential is not allowed here.",
    404: "Unknown id or address.",
    409: "The generation has already ended.",
    413: "The body or the text is too long.",
    415: "The body is not sent as application/json.",
    422: "A field has a value that cannot be used (unknown level, style or voice, empty text, id "
    "conflict...).",
    429: "Too many requests (LIROO_RATE_LIMIT); see Retry-After.",
    500: "An unexpected error on the server's side.",
    502: "The model service failed or answered something unusable.",
    503: "Short of memory, the model service busy, or storage unavailable; see Retry-After.",
    504: "The request ran past its deadline.",
}
GENERATION_ERRORS = (400, 401, 403, 413, 415, 422, 429, 500, 502, 503, 504)


@dataclass(frozen=True)
class Operation:
    route: Route  # its path, method, request model and access (liroo/routes.py)
    summary: str
    description: str = ""
    tag: str = "generation"
    response: type[BaseModel] | None = None  # the 200 JSON body
    content: dict[str, Any] | None = None  # a non-JSON 200 (metrics text, media files)
    errors: tuple[int, ...] = ()
    error_model: type[BaseModel] = r.ErrorResponse
    generation: bool = False  # request id, async mode, API key
    # several possible 200 bodies (the modes of /process)
    variants: tuple[type[BaseModel], ...] = ()
    example: dict[str, Any] | None = None
    html: bool = False  # also a text/html 200 for clients that prefer it

    @property
    def request(self) -> type[BaseModel] | None:
        return self.route.request


def generation(route: Route, summary: str, description: str = "", **fields: Any) -> Operation:
    """A generation route: request id, async mode, API key, and every generation error."""
    return Operation(
        route, summary, description, errors=GENERATION_ERRORS, generation=True, **fields
    )


def service(route: Route, summary: str, description: str = "", **fields: Any) -> Operation:
    """A route about the service itself (its pages, health, memory, metrics, this document)."""
    return Operation(route, summary, description, tag="service", **fields)


def job_read(route: Route, summary: str, description: str, response: type[BaseModel]) -> Operation:
    """A read of one generation's state by its id (its caller's, or with the admin token)."""
    return Operation(
        route, summary, description, tag="jobs", response=response, errors=(400, 403, 404, 500)
    )


APP_STORY_PROMPT = (
    "[Level: moderate]\nPlease convert the following text into an engaging fantasy story.\nImage "
    "Style to consider for tone and visuals: Studio Ghibli.\nOriginal Text:\nThe main character of "
    "this story is Mira.\n\nVolcanoes form where magma rises through cracks in the Earth's crust."
)


def illustrated_example(text: str, image_style: str) -> dict[str, Any]:
    """A comic's or a lecture's request as the app sends it, for a beginner."""
    return {
        "text": text,
        "level": "beginner",
        "image_style": image_style,
        "user_token": "device-token",
    }


# What each route of liroo/routes.py does, for readers of the document.
_DESCRIBED = (
    service(
        routes.STUDIO,
        "The studio page, or what this service is",
        "A browser (preferring text/html) gets the studio: a page to make and look at comics, "
        "stories, lectures, study pages and speech. Other clients get the JSON of /service.",
        response=r.IndexResponse,
        html=True,
    ),
    service(routes.SERVICE, "What this service is", response=r.IndexResponse),
    service(
        routes.STUDIO_FILES,
        "The studio page's script, stylesheet and icon",
        content={"text/javascript": {}, "text/css": {}, "image/svg+xml": {}},
        errors=(404,),
    ),
    service(
        routes.HEALTH,
        "Cheap health check",
        "No model call and no network: memory readings of this worker's governor.",
        response=r.HealthResponse,
        errors=(500,),
    ),
    service(
        routes.READY,
        "Startup probe",
        "503 (code redis_unavailable) while a configured Redis cannot be reached or refuses "
        "writes; a PING and a small write each time, so for Cloud Run's probe, not for clients "
        "(they call /health).",
        response=r.ReadyResponse,
        errors=(500, 503),
    ),
    service(
        routes.MEMORY,
        "Memory details",
        "Container (cgroup) and process readings, thresholds, governor counters.",
        response=r.MemoryResponse,
        errors=(401, 403, 500),
    ),
    service(
        routes.METRICS,
        "Prometheus metrics",
        content={"text/plain": {"schema": {"type": "string"}}},
        errors=(401, 403, 500),
    ),
    service(
        routes.OPENAPI,
        "This document",
        content={"application/json": {"schema": {"type": "object"}}},
    ),
    job_read(
        routes.PROGRESS,
        "Progress of a generation",
        "Answerable while it runs and for LIROO_JOB_TTL_S after it ends.",
        r.ProgressResponse,
    ),
    job_read(
        routes.JOB,
        "Progress and result of a generation",
        "With `Prefer: respond-async`, fetch the result here.",
        r.JobResponse,
    ),
    Operation(
        routes.CANCEL,
        "Cancel a running generation",
        "Only its caller (the API key that started it, or the admin token; with keys off, "
        "whoever holds the id). No model call is made after this: the job ends `failed` with "
        "`error_code: cancelled` (result status 409) and its memory is released. Answers the "
        "job's progress as it stands; cancelling a cancelled job answers it again.",
        tag="jobs",
        response=r.ProgressResponse,
        errors=(400, 401, 403, 404, 409, 429, 500),
    ),
    Operation(
        routes.MEDIA,
        "A generated picture or narration file",
        "Local storage's file, or with Cloud Storage (LIROO_GCS_URL_MODE=redirect) a 302 to a "
        "freshly signed URL of it: the address itself never expires.",
        tag="media",
        content={kind: {} for kind in MEDIA_TYPES},
        errors=(404,),
    ),
    generation(
        routes.COMIC,
        "An educational comic",
        "A script, then 3 to LIROO_MAX_PANELS panels, drawn as many at once as memory allows.",
        response=r.ComicResponse,
        example=illustrated_example("Plants make food from sunlight, water and air.", "Comic Book"),
    ),
    generation(
        routes.IMAGE,
        "One picture",
        response=r.ImageResponse,
        example={"prompt": "A lighthouse at dusk", "image_style": "Watercolor"},
    ),
    generation(
        routes.STORY,
        "An illustrated story",
        "`text` is the app's prompt (level, genre, image style, `Original Text:`, optional main "
        "character, then the student's text) or plain text; `level`, `image_style`, `genre` and "
        "`main_character` sent as fields win over the prompt. 2-5 chapters, each with a picture "
        "(`imageUrl` null if it failed).",
        response=r.StoryResponse,
        example={
            "text": APP_STORY_PROMPT,
            "level": "moderate",
            "image_style": "Studio Ghibli",
            "user_token": "device-token",
            "genre": "fantasy",
        },
    ),
    generation(
        routes.STUDY,
        "A study page, or its dialogue, explain-again, flashcard or slideshow mode",
        "`dialogue_mode: true` (needs `user_question`) answers `{dialogue_response}`; "
        "`explain_again_mode: true` (needs `original_paragraph_text`) answers "
        "`{re_explained_paragraph}`; `output_format` `flashcards` or `slideshow` (need "
        "`input_text`) answer `{flashcards}` or `{slides}`; otherwise (needs `input_text`) the "
        "study page `{blocks}`.",
        variants=(
            r.BlocksResponse,
            r.DialogueResponse,
            r.ExplainAgainResponse,
            r.FlashcardsResponse,
            r.SlidesResponse,
        ),
        example={
            "input_text": "Volcanoes form where magma rises through cracks in the crust.",
            "level": "moderate",
            "summarization_tier": "Detailed Explanation",
            "profile": {"studentLevel": "moderate", "topicsOfInterest": ["space", "football"]},
            "user_token": "device-token",
        },
    ),
    generation(
        routes.LECTURE,
        "A narrated lecture",
        "3-5 sections with pictures, and WAV narration of the title, each section title and each "
        "script. `lecture_id` is in every answer, errors included.",
        response=r.LectureResponse,
        error_model=r.LectureErrorResponse,
        example=illustrated_example(
            "Volcanoes form where magma rises through cracks in the crust.", "Watercolor"
        ),
    ),
    generation(
        routes.SPEECH,
        "Text read aloud",
        "Long text is read in sentence-aligned parts, encoded in order into one file (MP3 by "
        "default).",
        response=r.TtsResponse,
        example={
            "text": "Volcanoes form where magma rises.",
            "voice": "narrator",
            "model": "gemini-2.5-flash-preview-tts",
        },
    ),
)

# Keyed by (method, Werkzeug rule) exactly as app.url_map spells them.
OPERATIONS: dict[tuple[str, str], Operation] = {
    (op.route.method, op.route.path): op for op in _DESCRIBED
}

REQUEST_MODELS = [op.request for op in OPERATIONS.values() if op.request]
RESPONSE_MODELS = (
    [op.response for op in OPERATIONS.values() if op.response]
    + [model for op in OPERATIONS.values() for model in op.variants]
    + [op.error_model for op in OPERATIONS.values()]
    + [r.AsyncAccepted]
)


def openapi_path(rule: str) -> str:
    """``/media/<path:key>`` -> ``/media/{key}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def build_document(app: Flask) -> dict[str, Any]:
    inputs = [(model, "validation") for model in dict.fromkeys(REQUEST_MODELS)]
    outputs = [(model, "serialization") for model in dict.fromkeys(RESPONSE_MODELS)]
    refs, schemas = models_json_schema(
        inputs + outputs, ref_template="#/components/schemas/{model}"
    )

    def ref(model: type[BaseModel], mode: str = "serialization") -> dict[str, Any]:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if rule.endpoint in IGNORED_ENDPOINTS:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = OPERATIONS.get((method, rule.rule))
            entry = (
                _operation(op, ref)
                if op
                else {
                    "summary": rule.endpoint,
                    "x-undocumented": True,
                    "responses": {"default": {"description": "Not described yet."}},
                }
            )
            entry["operationId"] = f"{rule.endpoint.replace('.', '_')}_{method.lower()}"
            if rule.arguments:
                entry["parameters"] = [
                    _path_parameter(name) for name in sorted(rule.arguments)
                ] + entry.get("parameters", [])
            paths.setdefault(openapi_path(rule.rule), {})[method.lower()] = entry

    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Comics, stories, study pages, lectures and speech for the Liroo "
            "reading app, behind a memory governor. Every error is JSON with `error` (a sentence) "
            "and `code` (stable).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (only when LIROO_API_KEYS is set), or the admin "
                    "token for /memory and /metrics (only when LIROO_ADMIN_TOKEN is set).",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "The same API key, in its own header.",
                },
            },
        },
    }


def _path_parameter(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if name == "request_id":
        schema["pattern"] = REQUEST_ID_SCHEMA
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(op: Operation, ref) -> dict[str, Any]:
    entry: dict[str, Any] = {"summary": op.summary, "tags": [op.tag]}
    if op.description:
        entry["description"] = op.description
    success: dict[str, Any] = {"description": "Success."}
    if op.response is not None:
        success["content"] = _json(ref(op.response))
    elif op.variants:
        success["content"] = _json({"oneOf": [ref(model) for model in op.variants]})
    elif op.content is not None:
        success["content"] = op.content
    if op.html:
        success["content"]["text/html"] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {"200": success}
    if op.generation:
        entry["parameters"] = [
            {
                "name": REQUEST_ID_HEADER,
                "in": "header",
                "required": False,
                "description": "Your id for this request: poll /progress/{id}; a retry with the "
                "same id and body gets the first answer instead of a second generation.",
                "schema": {"type": "string", "pattern": REQUEST_ID_SCHEMA},
            },
            {
                "name": "Prefer",
                "in": "header",
                "required": False,
                "description": "`respond-async`: answer 202 at once; fetch the result from "
                "/jobs/{id}.",
                "schema": {"type": "string", "examples": ["respond-async"]},
            },
        ]
        responses["202"] = {
            "description": "Accepted (with `Prefer: respond-async`).",
            "content": _json(ref(r.AsyncAccepted)),
        }
        entry["security"] = [{}, {"bearer": []}, {"apiKey": []}]
    if op.route.keyed:
        entry["security"] = [{}, {"bearer": []}, {"apiKey": []}]
    if op.route.admin:
        entry["security"] = [{}, {"bearer": []}]
    if op.request is not None:
        body: dict[str, Any] = {"schema": ref(op.request, "validation")}
        if op.example:
            body["example"] = op.example
        entry["requestBody"] = {"required": True, "content": {"application/json": body}}
    for status in op.errors:
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": _json(ref(op.error_model)),
        }
    entry["responses"] = responses
    return entry


@routes.OPENAPI.view(bp)
def openapi_document():
    document = current_app.extensions.get("liroo.openapi")
    if document is None:  # routes are fixed once the app is built: make it once
        document = current_app.extensions["liroo.openapi"] = build_document(current_app)
    return jsonify(document)
