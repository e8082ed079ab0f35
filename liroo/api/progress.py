"""GET /progress/<id> (the app polls it every 2 s) and GET /jobs/<id> (async mode's result)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import routes
from ..errors import ApiError
from ..requestid import valid_request_id
from ..services import services
from .runner import job_view

bp = Blueprint("progress", __name__)


def _job(request_id: str):
    if not valid_request_id(request_id):
        raise ApiError(
            400, "invalid_request_id", "A request id must be 8 to 128 letters, digits, '-' or '_'."
        )
    job = services().runner.store.get(request_id)
    if job is None:
        raise ApiError(
            404, "unknown_request", "No request with this id is running or recently finished."
        )
    return job


@routes.PROGRESS.view(bp)
def progress(request_id: str):
    return jsonify(job_view(_job(request_id), with_result=False))


@routes.JOB.view(bp)
def job(request_id: str):
    return jsonify(job_view(_job(request_id), with_result=True))
