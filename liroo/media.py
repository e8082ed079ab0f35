"""/media/<key>: the service's stable address of every stored object.

With local storage it serves the file; with Cloud Storage in ``redirect`` mode
(liroo/storage/gcs.py) it answers 302 with a freshly signed URL, so a link the
app keeps in its history never expires while its object lives. Registered only
when the storage names media by this address (``storage.serves_media``).

Keys are checked twice: the raw
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

from flask import Blueprint, redirect, request, send_file

from . import routes
from .error_answer import ApiError
from .services import services
from .storage import LocalStorage, content_type_for
from .storage.base import MEDIA_PATH, is_valid_key

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
    if svc.settings.base_url or not svc.storage.serves_media:
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
    if _ENCODED_SEPARATOR.search(raw_path) or not is_valid_key(key):
        raise _NOT_FOUND
    storage = services().storage
    if not isinstance(storage, LocalStorage):
        return _redirect_to_signed(storage, key)
    path = storage.resolve(key)
    if path is None or not os.path.isfile(path):
        raise _NOT_FOUND
    response = send_file(
        path, mimetype=content_type_for(path), conditional=True, etag=True, max_age=ONE_YEAR_S
    )
    response.cache_control.immutable = True  # names never change content: no revalidation needed
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _redirect_to_signed(storage, key: str):
    """302 to a signed URL of the object; clients may keep the redirect while the URL is fresh.

    No existence check here (it would cost a round trip per fetch): a key nobody stored is
    refused by Cloud Storage itself behind the signed URL.
    """
    url, fresh_s = storage.signed_url(key)
    response = redirect(url, 302)
    response.cache_control.private = True
    response.cache_control.max_age = int(fresh_s)
    return response


_NOT_FOUND = ApiError(404, "not_found", "There is no media at this address.")
