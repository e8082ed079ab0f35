"""Every route's facts, declared once: its path and method, request model, cost at the governor's
door, exemption from the door, the fields on every answer, and who may call it.

Read by the blueprints (``Route.view`` registers the view at the declared path), every error
answer (``answer_fields``, and ``door_fields`` for the governor's), the door
(``RouteLookup`` names the rule a request matches, the way Flask will route it, so that
``//generate_image`` is costed like ``/generate_image``), security (admin routes), OpenAPI (request
models) and the studio (its modes). A route missing from ``ROUTES`` fails
tests/test_routes.py.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Callable

from flask import g, request
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from .api import models
from .clock import utc_timestamp
from .governor.middleware import ROUTE_ENVIRON_KEY
from .settings import Settings

CostMb = Callable[[Settings], float]


def one_image(settings: Settings) -> float:
    """Room for one picture (LIROO_IMAGE_RESERVE_MB)."""
    return settings.image_reserve_mb


def one_speech_chunk(settings: Settings) -> float:
    """Room for one speech chunk (LIROO_SPEECH_RESERVE_MB)."""
    return settings.speech_reserve_mb


def picture_and_speech(settings: Settings) -> float:
    """A lecture draws and narrates at the same time: room for a picture and a chunk."""
    return settings.image_reserve_mb + settings.speech_reserve_mb


# What each every-answer field is when the request has none yet.
_FIELD_MAKERS: dict[str, Callable[[], str]] = {"lecture_id": lambda: str(uuid.uuid4())}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the Werkzeug rule, as app.url_map spells it
    family: str  # a short name for the route's kind of work (the studio's modes, deadlines)
    request: type[BaseModel] | None = None  # the JSON body it takes
    cost_mb: CostMb | None = None  # the door admits it only with this much room
    door_exempt: bool = False  # never shed nor queued at the door (cheap, and how to see why)
    admin: bool = False  # needs LIROO_ADMIN_TOKEN when one is set
    keyed: bool = False  # takes the API key without being a generation (cancel)
    answer_fields: tuple[str, ...] = ()  # fields the app's decoders need on every answer
    options: tuple[tuple[str, object], ...] = ()  # more Werkzeug rule options

    def view(self, blueprint) -> Callable[[Callable], Callable]:
        """Register the decorated function as this route's view on ``blueprint``."""

        def register(function: Callable) -> Callable:
            blueprint.add_url_rule(
                self.path, view_func=function, methods=[self.method], **dict(self.options)
            )
            return function

        return register

    def fields(self, **known: str | None) -> dict[str, str]:
        """This route's every-answer fields: the ``known`` values, else fresh ones."""
        return {name: known.get(name) or _FIELD_MAKERS[name]() for name in self.answer_fields}


STUDIO = Route("GET", "/", "studio", door_exempt=True)
STUDIO_FILES = Route("GET", "/studio/static/<path:filename>", "studio", door_exempt=True)
SERVICE = Route("GET", "/service", "service")
HEALTH = Route("GET", "/health", "monitoring", door_exempt=True)
READY = Route("GET", "/ready", "monitoring", door_exempt=True)
MEMORY = Route("GET", "/memory", "monitoring", door_exempt=True, admin=True)
METRICS = Route("GET", "/metrics", "monitoring", door_exempt=True, admin=True)
OPENAPI = Route("GET", "/openapi.json", "service")
# The app stops polling after one failed poll: progress is a cheap read, never shed.
PROGRESS = Route("GET", "/progress/<request_id>", "jobs", door_exempt=True)
JOB = Route("GET", "/jobs/<request_id>", "jobs", door_exempt=True)
# Cancelling frees memory: never shed.
CANCEL = Route("DELETE", "/jobs/<request_id>", "jobs", door_exempt=True, keyed=True)
# merge_slashes=False: "/media//etc/passwd" must reach the view's check (and fail it), not be
# redirected to a cleaned-up path.
MEDIA = Route("GET", "/media/<path:key>", "media", options=(("merge_slashes", False),))
COMIC = Route("POST", "/generate_comic", "comic", models.ComicRequest, one_image)
IMAGE = Route("POST", "/generate_image", "image", models.ImageRequest, one_image)
STORY = Route("POST", "/generate_story", "story", models.StoryRequest, one_image)
STUDY = Route("POST", "/process", "study", models.ProcessRequest)
LECTURE = Route(
    "POST",
    "/generate_lecture",
    "lecture",
    models.LectureRequest,
    picture_and_speech,
    answer_fields=("lecture_id",),
)
SPEECH = Route("POST", "/generate_tts", "speech", models.TtsRequest, one_speech_chunk)

ROUTES = (
    STUDIO,
    STUDIO_FILES,
    SERVICE,
    HEALTH,
    READY,
    MEMORY,
    METRICS,
    OPENAPI,
    PROGRESS,
    JOB,
    CANCEL,
    MEDIA,
    COMIC,
    IMAGE,
    STORY,
    STUDY,
    LECTURE,
    SPEECH,
)
BY_RULE: dict[tuple[str, str], Route] = {(route.method, route.path): route for route in ROUTES}
assert len(BY_RULE) == len(ROUTES), "one route per method and path"
# A path's routes share their door facts (the door knows the path, not the method).
_ADMIN_PATHS = frozenset(route.path for route in ROUTES if route.admin)


def is_admin(path: str) -> bool:
    return path in _ADMIN_PATHS


def door_exempt_paths() -> list[str]:
    return sorted({route.path for route in ROUTES if route.door_exempt})


def door_costs_mb(settings: Settings) -> dict[str, float]:
    return {route.path: float(route.cost_mb(settings)) for route in ROUTES if route.cost_mb}


def answer_fields() -> dict:
    """The every-answer fields of the request being served (of its matched route), the same on
    each of its answers: every error body (errors.py), a generation's recorded failures and its
    202 (api/runner.py)."""
    rule = request.url_rule
    route = BY_RULE.get((request.method, rule.rule)) if rule is not None else None
    if route is None or not route.answer_fields:
        return {}
    if "liroo_answer_fields" not in g:
        g.liroo_answer_fields = route.fields()
    return g.liroo_answer_fields


def door_fields(environ: dict) -> dict:
    """What the app's decoders require on every error body of a generation route, for the
    governor's own answers (given before Flask sees the request): ComicResponse needs
    ``success`` and ``timestamp``, and the route's own fields, of the route the door matched
    (``//generate_lecture`` is the lecture route too)."""
    path = environ.get(ROUTE_ENVIRON_KEY, environ.get("PATH_INFO", ""))
    route = BY_RULE.get((environ.get("REQUEST_METHOD", "GET"), path))
    return {
        "success": False,
        "timestamp": utc_timestamp(),
        **(route.fields() if route is not None else {}),
    }


class RouteLookup:
    """The rule a request matches in the app's URL map, as Flask will route it ("" for none).

    The governor's door looks costs and exemptions up by it (its ``route_of``):
    ``//generate_image`` and ``///generate_comic`` reach the same views as the
    plain spellings, so they must be costed the same. A path spelled exactly as
    a rule without variables is that rule (a set lookup); any other is matched
    by Werkzeug (tens of microseconds), and the last few hundred (method, path)
    pairs are remembered.
    """

    def __init__(self, url_map: Map) -> None:
        self._exact = frozenset(
            (method, rule.rule)
            for rule in url_map.iter_rules()
            if not rule.arguments
            for method in rule.methods or ()
        )
        # The app's rules name no host, so one binding serves every request.
        self._adapter = url_map.bind("localhost")
        self._match = functools.lru_cache(maxsize=256)(self._rule)

    def _rule(self, method: str, path: str) -> str:
        try:
            rule, _ = self._adapter.match(path, method, return_rule=True)
        except HTTPException:  # 404, 405, or a redirect to the merged path: no route's work
            return ""
        return rule.rule

    def __call__(self, environ: dict) -> str:
        # PATH_INFO is a WSGI string (latin-1 of the bytes); Flask matches the UTF-8 text.
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if (method, path) in self._exact:
            return path
        try:
            path = path.encode("latin-1").decode("utf-8", "replace")
        except UnicodeEncodeError:  # not a WSGI string: match it as it is
            pass
        return self._match(method, path)
