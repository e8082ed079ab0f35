"""GET /progress/<id> (the app polls it every 2 s) and GET /jobs/<id> (async mode's result).

A live job is never 404: while the store that may hold it cannot be asked, 503 with
Retry-After.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import routes
from ..error_answer import ApiError
from ..jobs import JobStoreUnavailable
from ..requestid import valid_request_id
from ..services import services
from .runner import job_view

bp = Blueprint("progress", __name__)


def _job(request_id: str):
    if not valid_request_id(request_id):
        raise ApiError(
            400, "invalid_request_id", "A request id must be 8 to 128 letters, digits, '-' or '_'."
        )
    try:
        job = services().runner.store.get(request_id)
    except JobStoreUnavailable as exc:
        # Redis cannot be asked and the job is not in this instance's store: it may be running
        # elsewhere, so never "unknown". A job of this instance moves here within a heartbeat.
        raise ApiError(
            503,
            "job_store_unavailable",
            "Progress cannot be read right now; please retry shortly.",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
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
