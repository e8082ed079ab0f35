"""Blueprints that speak HTTP for the app's contract."""

from __future__ import annotations

from flask import g, request

from ..clock import utc_timestamp
from ..governor.middleware import ROUTE_ENVIRON_KEY


def answer_fields() -> dict:
    """The every-answer fields of the request being served (of its matched route: liroo/routes.py),
    the same on each of its answers.

    Added to every error body (errors.error_response), a generation's recorded
    failures and its 202 (api/runner.py).
    """
    rule = request.url_rule
    route = routes.BY_RULE.get((request.method, rule.rule)) if rule is not None else None
    if route is None or not route.answer_fields:
        return {}
    if "liroo_answer_fields" not in g:
        g.liroo_answer_fields = route.fields()
    return g.liroo_answer_fields


def shed_fields(environ: dict) -> dict:
    """What the app's decoders require on every error body of a generation route.

    Used for the governor's 503s, which are answered before Flask sees the
    request: ComicResponse needs ``success`` and ``timestamp``, and the
    route's own fields, of the route the door matched (``//generate_lecture``
    is the lecture route too).
    """
    path = environ.get(ROUTE_ENVIRON_KEY, environ.get("PATH_INFO", ""))
    route = routes.BY_RULE.get((environ.get("REQUEST_METHOD", "GET"), path))
    return {
        "success": False,
        "timestamp": utc_timestamp(),
        **(route.fields() if route is not None else {}),
    }


# Last: liroo/routes.py names the request models (api/models.py), whose imports reach errors.py,
# which imports answer_fields from here.
from .. import routes  # noqa: E402
