"""DELETE /jobs/<id>: cancel a running generation at its next model call.

The job's record stays, readable as before: what is deleted is the work still to do.

Only the caller who started it may (the API key its job records as owner, or the
admin token); with keys off the unguessable id is the capability, as for reading
it. The route only records the wish in the job store (``JobStore.cancel``): the
generation, on whichever worker or instance runs it, reads it before each picture
and each speech chunk (``Context.check_deadline``) and ends there, ``failed`` with
``error_code: "cancelled"``, its memory reservations released as it unwinds.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import routes
from ..error_answer import ApiError
from ..generation.context import CANCELLED_CODE
from ..jobs import RUNNING
from ..security import caller
from ..services import services
from .progress import _job
from .runner import job_view

bp = Blueprint("cancel", __name__)


@routes.CANCEL.view(bp)
def cancel(request_id: str):
    job = _job(request_id)  # 400 for a malformed id, 404 for an unknown one
    svc = services()
    who = caller()
    if svc.keyring.keys_required and not who.admin and job.owner not in (None, who.key_id):
        raise ApiError(403, "forbidden", "Only the caller who started it may cancel it.")
    if job.status != RUNNING and job.error_code != CANCELLED_CODE:
        raise ApiError(
            409, "already_finished", f"This generation has already ended ({job.status})."
        )
    if job.status == RUNNING:
        svc.runner.store.cancel(request_id)
        job = svc.runner.store.get(request_id) or job
    return jsonify(job_view(job, with_result=False))
