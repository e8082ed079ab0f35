"""/media/<key>: files of the local storage, and nothing outside its folder.

Registered only when local storage is active. Keys are checked twice: the raw
request line must not hide separators (``%2F``, ``%5C``: the server decodes
them before routing, so they would pass as real slashes), and the decoded key
must resolve inside the media folder without symlinks (LocalStorage.resolve).
Every refusal is the same 404, so probing learns nothing.

Without BASE_URL, local media URLs are stored as paths (``/media/<key>``) and
made absolute in each answer from that request's own host (``render_urls``):
a stored result replayed to another request never carries the first one's
``Host`` header, and a request whose Host is missing or not a host name is
refused (400 ``invalid_host``) rather than given unfetchable ``http:/media/...``.
"""

from __future__ import annotations

import os
import re

from flask import Blueprint, request, send_file

from . import routes
from .errors import ApiError
from .services import services
from .storage import LocalStorage, content_type_for
from .storage.local import MEDIA_PATH

bp = Blueprint("media", __name__)

ONE_YEAR_S = 365 * 24 * 3600
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
# A Host header fit to build URLs from: a DNS name or IPv4 address, or a bracketed IPv6 one; an
# optional port.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


def url_base() -> str | None:
    """The base that makes this answer's media paths absolute, or None when stored URLs already are.

    Raises 400 ``invalid_host`` when one is needed and the request's Host cannot give it.
    """
    svc = services()
    if svc.settings.base_url or not isinstance(svc.storage, LocalStorage):
        return None
    if not _HOST.fullmatch(request.host or ""):
        raise ApiError(
            400,
            "invalid_host",
            "The Host header is missing or is not a host name, so the addresses of generated media "
            "cannot be made from it.",
        )
    return request.host_url.rstrip("/")


def render_urls(value, base: str | None):
    """``value`` with every media path under a ``*url``/``*Url`` key made absolute with ``base``."""
    if base is None:
        return value
    if isinstance(value, dict):
        return {
            k: base + v
            if isinstance(v, str) and v.startswith(MEDIA_PATH) and k.lower().endswith("url")
            else render_urls(v, base)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [render_urls(item, base) for item in value]
    return value


# The rule keeps doubled slashes (liroo/routes.py): "/media//etc/passwd" reaches the check.
@routes.MEDIA.view(bp)
def media(key: str):
    raw_path = (request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "").split(
        "?", 1
    )[0]
    path = None if _ENCODED_SEPARATOR.search(raw_path) else services().storage.resolve(key)
    if path is None or not os.path.isfile(path):
        raise ApiError(404, "not_found", "There is no media at this address.")
    response = send_file(
        path, mimetype=content_type_for(path), conditional=True, etag=True, max_age=ONE_YEAR_S
    )
    response.cache_control.immutable = True  # names never change content: no revalidation needed
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
