"""/media/<key>: files of the local storage, and nothing outside its folder.

Registered only when local storage is active. Keys are checked twice: the raw
request line must not hide separators (``%2F``, ``%5C``: the server decodes
them before routing, so they would pass as real slashes), and the decoded key
must resolve inside the media folder without symlinks (LocalStorage.resolve).
Every refusal is the same 404, so probing learns nothing.
"""
from __future__ import annotations

import os
import re

from flask import Blueprint, request, send_file

from .errors import ApiError
from .services import services
from .storage import content_type_for

bp = Blueprint("media", __name__)

ONE_YEAR_S = 365 * 24 * 3600
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


# merge_slashes=False: "/media//etc/passwd" must reach the check (and fail it),
# not be redirected to a cleaned-up path.
@bp.get("/media/<path:key>", merge_slashes=False)
def media(key: str):
    raw_path = (request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "").split("?", 1)[0]
    path = None if _ENCODED_SEPARATOR.search(raw_path) else services().storage.resolve(key)
    if path is None or not os.path.isfile(path):
        raise ApiError(404, "not_found", "There is no media at this address.")
    response = send_file(path, mimetype=content_type_for(path), conditional=True, etag=True, max_age=ONE_YEAR_S)
    response.cache_control.immutable = True   # names never change content: no revalidation needed
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
