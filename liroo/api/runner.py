"""The life of a generation request: validate, claim its id, run (or wait, or replay), record,
answer.

Every generation endpoint goes through ``run_generation`` so that ids,
progress, idempotent retries, async mode and error bodies work the same way
everywhere.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from flask import Response, current_app, g, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from .. import routes
from ..clock import utc_timestamp
from ..error_answer import ApiError, generation_answer
from ..errors import api_error_for
from ..generation.context import Context, DeadlineExceeded, Progress, expected_rest_s
from ..generation.timing import ROUTE_TIMES
from ..governor import DEADLINE_KEY
from ..jobs import FAILED, RUNNING, SUCCEEDED, Heartbeats, Joins, worker_tag
from ..media import render_urls, url_base
from ..providers.pacing import bounded_by
from ..requestid import REPLAY_PROBE
from ..security import caller_id
from ..services import services
from ..worker_contract import INTERRUPTED_KEY, PARK_KEY, ClientTimeout, interrupted_answer
from .body_size import refuse_cut_body
from .claims import JOIN_DEADLINE, claim_id, fingerprint, request_id_of

log = logging.getLogger("liroo.api")
M = TypeVar("M", bound=BaseModel)

# Pydantic error types that mean "a field is missing" rather than "a field is wrong".
_MISSING = {"missing"}
# Custom error types raised by our validators, with their HTTP status.
_CUSTOM_STATUS = {"text_too_long": 413, "invalid_text": 422, "invalid_request_id": 400}


def parse_body(model: type[M]) -> M:
    """The request's JSON body validated by ``model``, or a clear 4xx."""
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "Send the body as JSON (Content-Type: application/json)."
        )
    try:
        raw = request.get_data(cache=True)
    except HTTPException:
        # werkzeug's own answers: 413 over LIROO_MAX_BODY_BYTES, 400 for a client gone mid-body
        raise
    except ClientTimeout:
        log.info("request body did not arrive in time (request %s)", g.request_id)
        raise ApiError(408, "request_timeout", "The request took too long to arrive.") from None
    except Exception as exc:
        # The server's body reader refused the framing (gunicorn raises its ParseException
        # subclasses for a malformed chunk) or the connection broke: the client's fault, not a 500.
        log.info(
            "request body could not be read (request %s): %s", g.request_id, type(exc).__name__
        )
        raise ApiError(400, "unreadable_body", "The request body could not be read.") from None
    refuse_cut_body(raw)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    except RecursionError:
        # json recurses once per nesting level and gives up near the interpreter's recursion
        # limit (about 1,000 levels): the depth is bounded there, and no request of the
        # contract nests more than a few levels.
        log.info("request body nested too deeply to parse (request %s)", g.request_id)
        raise ApiError(
            400, "invalid_json", "The body is not valid JSON: it is nested too deeply."
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body must be a JSON object.")
    try:
        return model.model_validate(data, context={"settings": services().settings})
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    kind = first["type"]
    if kind in _MISSING:
        return ApiError(400, "missing_field", f"The field '{field}' is required.", field=field)
    if kind in _CUSTOM_STATUS or kind.startswith(("unknown_", "empty_")):
        return ApiError(_CUSTOM_STATUS.get(kind, 422), kind, first["msg"], field=field)
    return ApiError(
        422, "invalid_field", f"The field '{field}' is not valid: {first['msg']}.", field=field
    )


@dataclass(frozen=True)
class Generation:
    """One claimed generation: its id, the work and what it runs with, and the route's own fields
    for a recorded failure."""

    request_id: str
    work: Callable[[Context], dict]
    ctx: Context
    error_extra: dict


class Runner:
    """Runs generations for one process: heartbeats for running jobs, a bounded pool for async
    ones."""

    def __init__(self, store, max_async: int, joins_per_request: int = 2) -> None:
        self.store = store
        self.heartbeats = Heartbeats(store)  # also the set of this process's accepted jobs
        self.joins = Joins(store, joins_per_request)  # retries waiting for a running request
        self._max_async = max_async
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._async_lock = threading.Lock()
        self._async = 0  # async jobs accepted and not yet finished
        self._idle = threading.Event()  # set whenever a job ends

    def submit(self, generation: Generation) -> bool:
        """Queue an async job; False when this worker's queue is full."""
        with self._async_lock:
            if self._async >= self._max_async * 4:
                return False
            self._async += 1
        with self._pool_lock:
            if self._pool is None:  # made lazily, so each gunicorn worker has its own
                self._pool = ThreadPoolExecutor(self._max_async, thread_name_prefix="liroo-async")
        self.accept(generation.request_id)  # beating from now on: a queued job is not abandoned
        app = current_app._get_current_object()

        def run() -> None:
            try:
                # The app's context, as in a request: recording a failure reads g and the services.
                with app.app_context():
                    g.request_id = generation.request_id
                    self.execute(generation)
            finally:
                with self._async_lock:
                    self._async -= 1

        self._pool.submit(run)
        return True

    def accept(self, request_id: str) -> None:
        self.heartbeats.add(request_id)

    def wait_idle(self, timeout_s: float, beat: Callable[[], None] = lambda: None) -> bool:
        """Wait until no job of this process is running (a retiring worker); ``beat`` keeps the
        worker alive."""
        deadline = time.monotonic() + timeout_s
        while self.heartbeats.running() and time.monotonic() < deadline:
            beat()
            self._idle.wait(0.5)
            self._idle.clear()
        return not self.heartbeats.running()

    def hand_back(self, request_ids: list[str] | None = None) -> None:
        """Mark unfinished jobs (this process's by default) as interrupted so that a retry runs them
        afresh at once.

        Called when a worker stops (SIGTERM, recycling): work that cannot finish
        in the grace period is given back rather than silently dropped.
        """
        for request_id in self.heartbeats.running() if request_ids is None else request_ids:
            body = interrupted_answer({"request_id": request_id}).body()
            try:
                self.store.finish(request_id, FAILED, 503, body, error_code="interrupted")
            except Exception:
                log.warning("could not hand back job %s", request_id, exc_info=True)

    def hand_back_dead_worker(self, pid: int) -> None:
        """In gunicorn's master, once worker ``pid`` is gone: hand back the jobs it was running.

        A worker killed outright (SIGKILL, the OOM killer) runs no exit hook:
        without this its jobs would read "running" until their heartbeat went
        stale, and a retry would wait that long.
        """
        try:
            orphans = self.store.running_on(worker_tag(pid))
        except Exception:
            log.warning("could not look up the jobs of dead worker %d", pid, exc_info=True)
            return
        if orphans:
            log.warning(
                "worker %d died with %d running jobs: handed back as interrupted", pid, len(orphans)
            )
            self.hand_back(orphans)

    def execute(self, generation: Generation) -> tuple[int, dict]:
        """Run the generation's work and record its outcome; returns (status, body)."""
        request_id = generation.request_id
        self.accept(request_id)
        started = time.monotonic()
        try:
            try:
                body = generation.work(generation.ctx)
                status, state, code = 200, SUCCEEDED, None
                ctx = generation.ctx
                ROUTE_TIMES.record(ctx.route, time.monotonic() - started, ctx.progress.total_steps)
            except Exception as exc:  # every failure becomes a recorded error body
                status, body = failure_answer(exc, request_id, generation.error_extra)
                state, code = FAILED, body["code"]
            body.setdefault("request_id", request_id)
            body.setdefault("timestamp", utc_timestamp())
            try:
                self.store.finish(request_id, state, status, body, error_code=code)
            # The work is done and paid for: answer it even if it cannot be recorded.
            except Exception:
                log.error("could not record the result of %s", request_id, exc_info=True)
            return status, body
        finally:
            self.heartbeats.discard(request_id)
            self._idle.set()

    def run_until(self, generation: Generation, answer_by: float) -> tuple[int, dict] | None:
        """Run the generation on a thread of its own, waiting for it until ``answer_by`` (sooner
        if a wait of its own cannot end in time: Context.late): (status, body), or None while it
        is still at work.

        Unanswered, the work goes on: it records its outcome for the client's retry to join,
        and beats as a running job of this process, so a retiring worker waits for it
        (wait_idle) and hands it back if it cannot.
        """
        ctx = generation.ctx
        outcome: list[tuple[int, dict]] = []
        app = current_app._get_current_object()
        self.accept(generation.request_id)  # beating from now on, like execute

        def run() -> None:
            try:
                # The app's context, as in a request: recording a failure reads g and the services.
                with app.app_context(), bounded_by(ctx):
                    g.request_id = generation.request_id
                    outcome.append(self.execute(generation))
            finally:
                ctx.answer_now.set()

        threading.Thread(target=run, name="liroo-work", daemon=True).start()
        ctx.answer_now.wait(max(answer_by - time.monotonic(), 0.0))
        return outcome[0] if outcome else None


def failure_answer(exc: Exception, request_id: str, error_extra: dict) -> tuple[int, dict]:
    """The (status, body) recorded for a generation that raised ``exc`` (errors.api_error_for's
    table): its Retry-After also in the body, which is what is stored and replayed."""
    error = api_error_for(exc, request_id, unexpected="generation failed")
    answer = generation_answer(
        error.status, error.code, error.message, request_id, **error.extra, **error_extra
    )
    body = answer.body()
    if error.headers.get("Retry-After"):
        body.setdefault("retry_after_s", int(error.headers["Retry-After"]))
    return error.status, body


def _respond(status: int, body: dict, replay: bool = False) -> Response:
    response = jsonify(render_urls(body, url_base()))
    response.status_code = status
    retry = body.get("retry_after_s") if status in (429, 503) else None
    if retry:
        response.headers["Retry-After"] = str(retry)
    if replay:
        response.headers["X-Idempotent-Replay"] = "true"
    return response


def run_generation(payload: BaseModel, work: Callable[[Context], dict]) -> Response:
    """Claim the request's id and answer: run it, wait for the first attempt, or replay its result.

    The route (its rule, e.g. ``/generate_comic``) is part of the idempotency fingerprint and the
    job's record.
    """
    svc = services()
    runner = svc.runner
    endpoint = request.url_rule.rule
    fp = fingerprint(endpoint, payload)
    request_id, derived = request_id_of(payload, fp)
    svc.reserver.adopt_pledge(request_id)  # the door's pledge is this request's: its steps take it
    url_base()  # a Host no media URL can be made from is refused before any work
    started = time.monotonic()
    work_deadline = started + svc.settings.request_deadline_s
    deadline = min(_answer_deadline(svc.settings, started) or work_deadline, work_deadline)
    replay_s = svc.settings.derived_replay_s if derived else None
    probe = bool(request.environ.get(REPLAY_PROBE))  # the replay layer's look, before the door
    # Parked outside the memory door only (the look, or no door at all): a request inside it
    # holds the door's pledge and its place in line, which a parked join must not keep.
    park = request.environ.get(PARK_KEY) if probe or not svc.settings.governor_enabled else None
    try:
        claim = claim_id(
            runner, request_id, endpoint, fp, caller_id(), deadline, replay_s, probe, park
        )
    except DeadlineExceeded:  # a retry joined the running request and its deadline came first
        return _still_working(request_id, routes.answer_fields(), None)
    if claim.outcome == "finished":
        status, body = claim.job.result()
        return _respond(status, body, replay=True)

    ctx = Context(
        settings=svc.settings,
        provider=svc.provider,
        storage=svc.storage,
        reserver=svc.reserver,
        progress=Progress(runner.store, request_id),
        request_id=request_id,
        public_base=svc.settings.base_url,
        deadline=deadline,
        work_deadline=work_deadline,
        route=endpoint,
    )
    error_extra = routes.answer_fields()  # the route's own fields, on its recorded failures too
    generation = Generation(request_id, work, ctx, error_extra)

    # With async off (Cloud Run's default: its CPU is throttled once a response is sent), the
    # preference is ignored, as RFC 7240 allows: the request is answered the synchronous way.
    if svc.settings.async_enabled and "respond-async" in request.headers.get("Prefer", "").lower():
        ctx.deadline = work_deadline  # no one waits for its answer: its work decides
        return _run_async(runner, generation, svc.settings.retry_after_s)

    # The fields of the answer the worker (liroo/server.py) renders and sends if it stops before
    # this request is answered (worker_contract.interrupted_answer, stamped when it is sent).
    request.environ[INTERRUPTED_KEY] = {"request_id": request_id, **error_extra}
    if deadline >= work_deadline:  # no deadline of its own (LIROO_DEADLINE=off): run it here
        status, body = runner.execute(generation)
        return _respond(status, body)
    outcome = runner.run_until(generation, deadline)
    if outcome is None:
        return _still_working(request_id, error_extra, ctx)
    return _respond(*outcome)


def _run_async(runner: Runner, generation: Generation, retry_after_s: int) -> Response:
    """202 Accepted with where to follow the job, or 503 ``busy`` when this worker's queue is
    full."""
    request_id, error_extra = generation.request_id, generation.error_extra
    if not runner.submit(generation):
        answer = generation_answer(
            503,
            "busy",
            "Too much work is queued here; please retry shortly.",
            request_id,
            **error_extra,
        )
        runner.store.finish(request_id, FAILED, 503, answer.body(), error_code="busy")
        return _respond(503, answer.with_fields(retry_after_s=retry_after_s).body())
    location = routes.JOB.path.replace("<request_id>", request_id)
    response = jsonify(
        {
            "request_id": request_id,
            "status": "running",
            "location": location,
            "progress": routes.PROGRESS.path.replace("<request_id>", request_id),
            **error_extra,
        }
    )
    response.status_code = 202
    response.headers["Location"] = location
    response.headers["Preference-Applied"] = "respond-async"
    return response


# The client's own deadline (Envoy's x-envoy-expected-rq-timeout-ms convention: relative ms).
TIMEOUT_HEADER = "X-Request-Timeout-Ms"


def _answer_deadline(settings, now: float) -> float | None:
    """When the answer must be sent (time.monotonic()), or None (LIROO_DEADLINE=off).

    The memory door sets it at the request's arrival (``environ[DEADLINE_KEY]``); without the
    door (LIROO_GOVERNOR=off, or the replay layer's look, which runs before it) it is
    LIROO_DEADLINE_S from now, shortened by the client's X-Request-Timeout-Ms (the door answers
    400 to a malformed one).
    """
    deadline = request.environ.get(DEADLINE_KEY)
    if deadline is None and settings.deadline_enabled:
        deadline = now + settings.deadline_s
        raw = request.headers.get(TIMEOUT_HEADER, "")
        if raw.isdigit() and int(raw) > 0:
            deadline = min(deadline, now + int(raw) / 1000)
    joined = request.environ.get(JOIN_DEADLINE)  # a parked join's, from its arrival
    if joined is not None:
        deadline = joined if deadline is None else min(deadline, joined)
    return deadline


def _still_working(request_id: str, error_extra: dict, ctx: Context | None) -> Response:
    """503 for a request still at work at its deadline: retry with the same body, and the retry
    joins the work (or gets its result). Retry-After is the time its rest is expected to take."""
    expected = expected_rest_s(ctx) if ctx is not None else None
    # Without a measure of this request's rest, the door's measured drain rate.
    retry_after = services().governor.retry_after_s() if expected is None else expected
    log.info("request %s answers 503 at its deadline and keeps working", request_id)
    answer = generation_answer(
        503,
        "still_working",
        "This is taking longer than usual; retry the same request to get the result.",
        request_id,
        retry_after_s=max(1, math.ceil(retry_after)),
        **error_extra,
    )
    return _respond(503, answer.body())


def job_view(job: Any, with_result: bool) -> dict:
    """The contract's progress fields (plus status and, for /jobs, the result)."""
    view = {
        "success": job.status != FAILED,
        "status": job.status,
        "step": job.step,
        "step_number": job.step_number if job.status != SUCCEEDED else job.total_steps,
        "total_steps": job.total_steps,
        "details": job.details,
        "last_updated": utc_timestamp(job.updated_at),
        "progress_percentage": job.percentage,
        "request_id": job.request_id,
        "timestamp": utc_timestamp(),
    }
    partial = job.partial_items() if job.status == RUNNING else None
    # what is already finished, for watchers to show before the end (the app ignores it)
    if partial:
        view["partial"] = partial
    if job.status == FAILED:
        view["error_code"] = job.error_code
        result = job.result()
        if result:
            view["error"] = result[1].get("error")
    if with_result and job.finished:
        result = job.result()
        if result:
            view["result_status"], view["result"] = result
    return render_urls(view, url_base())
