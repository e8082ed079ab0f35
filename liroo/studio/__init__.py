"""The studio: a page at ``/`` where a person makes a comic, story, lecture, study page or speech
and looks at it.

Server-rendered (Jinja) with one small plain script and one stylesheet from
this package's static folder: no build step, no CDN, nothing inline, so the
page works offline and under a strict Content-Security-Policy. The script
speaks to the same routes as any client: a generation in async mode with its
own ``X-Request-ID``, then ``/progress/<id>`` (with the ``partial`` results, so
panels appear as they are drawn) and ``/jobs/<id>`` for the answer; ``/health``
for the memory gauge; ``DELETE /jobs/<id>`` for its Cancel button. The browser keeps the
ids (not the content) of recent results in localStorage and reopens them through ``/jobs/<id>``
while the server keeps them (LIROO_JOB_TTL_S); a reload mid-generation picks the running request
up again. It never asks for ``/memory`` or ``/metrics``: with
``LIROO_ADMIN_TOKEN`` set the gauge shows only what ``/health`` shows.

``/`` still answers the JSON service description (also at ``/service``) to
any client that does not prefer HTML (``Accept: application/json``, curl's
``*/*``), so scripts and probes keep what they had.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, make_response, render_template, request, url_for

from .. import routes
from ..generation.options import LEVELS, STYLES, level_key, style_key
from ..generation.story import GENRES
from ..monitoring import service_description
from ..providers.base import VOICE_ROLES
from ..requestid import valid_request_id
from ..services import services

bp = Blueprint(
    "studio",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path=routes.STUDIO_FILES.path.removesuffix("/<path:filename>"),
)

# (key, label, path): the key is the route's family (liroo/routes.py); the script builds each
# route's body (studio.js, bodyFor).
MODES = tuple(
    (route.family, label, route.path)
    for route, label in (
        (routes.COMIC, "Comic"),
        (routes.STORY, "Story"),
        (routes.LECTURE, "Lecture"),
        (routes.STUDY, "Study page"),
        (routes.SPEECH, "Speech"),
    )
)
DEFAULT_STYLE = "comic_book"
GCS_ORIGIN = "https://storage.googleapis.com"  # both signed and public object URLs live here


def media_origins(settings) -> list[str]:
    """Where generated pictures and audio are served from, besides this page's own origin."""
    if settings.storage_backend == "gcs":
        return [GCS_ORIGIN]
    if settings.base_url:
        parts = urlsplit(settings.base_url)
        return [f"{parts.scheme}://{parts.netloc}"]
    return []


def content_security_policy(settings) -> str:
    media = " ".join(["'self'", *media_origins(settings)])
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {media}",
            f"media-src {media}",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


def wants_html() -> bool:
    """A browser asks for text/html first; curl (*/*), scripts and the app's probes get JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _prefill() -> dict[str, str]:
    """The form's values from the query (``/?mode=comic&text=...&run=1``); unknown values fall
    back."""
    args = request.args
    mode = args.get("mode", "").strip().lower()
    voice = args.get("voice", "").strip().lower()
    genre = args.get("genre", "").strip().lower()
    return {
        "mode": mode if mode in {key for key, _, _ in MODES} else "comic",
        "text": args.get("text", ""),
        "level": level_key(args.get("level", "")) or "beginner",
        "style": style_key(args.get("style", "")) or DEFAULT_STYLE,
        "voice": voice if voice in VOICE_ROLES else "narrator",
        "genre": next((name for name in GENRES if name.lower() == genre), ""),
        "run": "1" if args.get("run") == "1" else "0",
        # a shared result (``/?result=<request id>``): opened by id, never made again
        "result": args.get("result", "") if valid_request_id(args.get("result", "")) else "",
    }


@routes.STUDIO.view(bp)
def page() -> Response:
    if not wants_html():
        response = service_description()
    else:
        svc = services()
        settings, governor, keyring = svc.settings, svc.governor, svc.keyring
        thresholds = None if keyring.admin_required else governor.thresholds
        response = make_response(
            render_template(
                "studio.html",
                modes=MODES,
                levels=LEVELS,
                styles=STYLES,
                voices=VOICE_ROLES,
                genres=GENRES,
                form=_prefill(),
                keys_required=keyring.keys_required,
                thresholds=thresholds,
                max_chars=settings.max_input_chars,
                max_speech_chars=settings.max_long_text_chars,  # speech reads whole stories
                job_ttl_s=settings.job_ttl_s,
                deadline_s=settings.request_deadline_s,
                results_script=url_for("studio.static", filename="studio-results.js"),
                provider=settings.provider_name,
                script=url_for("studio.static", filename="studio.js"),
                stylesheet=url_for("studio.static", filename="studio.css"),
                icon=url_for("studio.static", filename="favicon.svg"),
            )
        )
        response.headers["Content-Security-Policy"] = content_security_policy(settings)
        response.headers["Referrer-Policy"] = "no-referrer"  # the query may hold a student's text
        response.headers["Cache-Control"] = "no-store"
    response.vary.add("Accept")
    return response
