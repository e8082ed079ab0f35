"""Making pictures: cache, memory reservation, model, safe pipeline, storage; as many at once as
fit.

Each picture reserves memory from the governor before it calls the model (for
the response it will hold), grows the reservation to the decode estimate read
from the image header before decoding, and releases it once the result is
stored. When memory is short a picture waits for room (other pictures
finishing) rather than failing, up to LIROO_RESERVATION_WAIT_S within the
request's deadline (context.Context.wait_within); waiting pictures of
different requests take turns (the governor's reservation groups), so one
comic's panels cannot keep another comic's out.

A request never waits for memory it holds itself: while some of its pictures
are at work (answers in hand, decodes), a picture that finds no room does not
wait in the governor for what its siblings hold; the request goes on with one
picture fewer at a time (``Lanes``, down to one), and the picture waits for a
sibling to be stored and released. Under pressure a comic is slower, not
refused.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from ..governor import MemoryPressure, Reservation
from ..imaging import (
    ImageRejected,
    estimate_decode_mb,
    inspect_image,
    output_extension,
    process_for_storage,
)
from ..providers.base import BadOutput
from ..providers.pacing import bounded_by
from ..storage import IMMUTABLE_CACHE, cached_url, image_cache_key, image_cache_object, media_key
from .context import Context, Finished
from .costs import RecentCosts
from .failures import failure_code, note_failure


class ImageCosts(RecentCosts):
    """What recent pictures held in memory while the model answered, to size the reservation made
    before a call.

    While the SDK receives a picture it holds the HTTP body, the parsed JSON
    and the decoded bytes at once (about four times the image's size). The
    reservation before the call covers that for the largest recent picture;
    the decode is reserved only once the answer is in (its size read from the
    header), because promising it for the whole model call (seconds, during
    which nothing is allocated) would keep other pictures out of memory that is
    really free. A step that grows goes before new steps, so it waits little.
    Until a picture has been seen, LIROO_IMAGE_RESERVE_MB is used (the door's
    pledge for a request that makes pictures stays that figure); after that the
    floor no longer applies, since it would promise for the model's wait the
    memory only the decode needs.
    """

    HOLD_FACTOR = 4

    def record(self, response_mb: float) -> None:
        self.record_mb(self.HOLD_FACTOR * response_mb)

    def reserve_mb(self, floor_mb: float, units: float = 1.0) -> float:
        return max(self._per_unit) * units if self._per_unit else floor_mb * units

    def known(self) -> bool:
        """Has this process seen a picture yet (are reservations sized by one)?"""
        return bool(self._per_unit)


IMAGE_COSTS = ImageCosts()

# How long a picture whose siblings are at work waits in the governor before it gives way to them:
# long enough for another request's step to end, short against a request's deadline.
GIVE_WAY_S = 0.5


class GiveWay(Exception):
    """No room for a picture while pictures of its own request hold memory: it waits for one of
    them to end instead (``Lanes``)."""


class Lanes:
    """How many of one request's pictures are at work at once.

    All of them (or LIROO_PANEL_CONCURRENCY); but one alone until the process
    has seen a picture, because until then reservations are the floor
    (LIROO_IMAGE_RESERVE_MB), not what a picture really holds, and several
    pictures in hand that each wait for room to decode wait for one another.
    Each time a picture finds no room while its siblings are at work, one
    fewer (down to one), so that the memory the request holds comes free as
    its pictures are stored rather than being waited for.
    """

    def __init__(self, most: int) -> None:
        self.most = max(most, 1)
        self.width = self.most if IMAGE_COSTS.known() else 1
        self.narrowed = False
        self.busy = 0
        self._changed = threading.Condition()

    def learned(self) -> None:
        """A picture's cost is known now: all lanes open, unless memory narrowed them."""
        with self._changed:
            if not self.narrowed and self.width < self.most:
                self.width = self.most
                self._changed.notify_all()

    def siblings(self) -> int:
        """Other pictures of the request at work now (beside the caller's)."""
        return self.busy - 1

    @contextmanager
    def lane(self, ctx: Context, until: float) -> Iterator[None]:
        """A place among the pictures at work, waiting for one until ``until`` (time.monotonic()),
        and telling the request it is late past its ``answer_by``. Past ``until`` it goes ahead
        anyway: its reservation then decides."""
        with self._changed:
            while self.busy >= self.width and (now := time.monotonic()) < until:
                answer_by = ctx.answer_by()
                if now >= answer_by:
                    ctx.late()
                self._changed.wait(min(until, answer_by if answer_by > now else until) - now)
            self.busy += 1
        try:
            yield
        finally:
            with self._changed:
                self.busy -= 1
                self._changed.notify_all()

    def narrow(self) -> None:
        """One picture fewer at once than are at work now (never below one)."""
        with self._changed:
            self.narrowed = True
            self.width = max(1, min(self.width, self.busy - 1))


@dataclass(frozen=True)
class ImageJob:
    prompt: str
    cache_parts: tuple[str | None, str | None] = (None, None)  # (style, level), in the cache key
    aspect_ratio: str = "1:1"
    label: str = "image"
    kind: str = "images"  # storage folder


@dataclass(frozen=True)
class ImageOutcome:
    url: str | None = None
    error: Exception | None = None
    cached: bool = False

    @property
    def error_code(self) -> str | None:
        return failure_code(self.error, "image_failed")


def make_image(ctx: Context, job: ImageJob, lanes: Lanes | None = None) -> str:
    """One picture's URL; raises ProviderError, MemoryPressure, StorageError or DeadlineExceeded.

    ``lanes``: the request's pictures at work (make_images); a picture raises GiveWay rather than
    wait for memory its siblings hold.
    """
    settings, provider, storage = ctx.settings, ctx.provider, ctx.storage
    extension = output_extension(settings.image_format)
    key = None
    if settings.image_cache:
        digest = image_cache_key(
            job.prompt,
            job.cache_parts[0],
            job.cache_parts[1],
            job.aspect_ratio,
            f"{provider.name}:{provider.image_model}",
        )
        key = image_cache_object(digest, extension)
        url = cached_url(storage, key, ctx.public_base)
        if url:
            return url
    ctx.check_deadline()
    with _reserve(ctx, lanes, IMAGE_COSTS.reserve_mb(settings.image_reserve_mb)) as reservation:
        result = provider.generate_image(job.prompt, job.aspect_ratio)
        response_mb = len(result.data) / (1024 * 1024)
        try:
            info = inspect_image(result.data, settings.max_image_pixels)
            decode_mb = estimate_decode_mb(info, settings.max_image_side)
            IMAGE_COSTS.record(response_mb)
            _room_to_decode(ctx, lanes, reservation, response_mb, decode_mb)
            if lanes is not None:
                lanes.learned()  # after its own room: the others' would come first
            processed = process_for_storage(result.data, settings)
        except ImageRejected as exc:
            raise BadOutput(f"model image rejected: {exc.code}") from None
        del result  # the model's bytes can be large; drop them before the upload
        return storage.put(
            key or media_key(job.kind, extension),
            processed.data,
            processed.mime_type,
            IMMUTABLE_CACHE,
            public_base=ctx.public_base,
        )


@contextmanager
def _reserve(ctx: Context, lanes: Lanes | None, mb: float) -> Iterator[Reservation]:
    """The picture's first reservation: within the deadline when it is the request's only picture
    at work; else briefly, then GiveWay (the room may be what its siblings hold)."""
    if lanes is None or lanes.siblings() <= 0:
        with ctx.reserve(mb) as reservation:
            yield reservation
        return
    with ExitStack() as stack:
        try:
            reservation = stack.enter_context(
                ctx.reserve_once(mb, min(GIVE_WAY_S, ctx.reservation_wait_s()))
            )
        except MemoryPressure:
            raise GiveWay() from None
        yield reservation


def _room_to_decode(
    ctx: Context,
    lanes: Lanes | None,
    reservation: Reservation,
    response_mb: float,
    decode_mb: float,
) -> None:
    """Room for the decode beside the answer in hand.

    A reservation sized by recent pictures usually covers both already: it
    keeps that much and waits for nothing. Else it holds only the bytes while
    it waits to grow (no hold-and-wait); while siblings are at work, the
    request narrows first, so that no new picture takes the room their ends
    free.
    """
    needed = response_mb + decode_mb
    if reservation.mb >= needed:
        reservation.shrink_to(needed)
        reservation.hold(response_mb)  # the answer is in hand: the reading counts it from now on
        return
    reservation.shrink_to(response_mb)
    reservation.hold(response_mb)
    if lanes is not None and lanes.siblings() > 0:
        try:
            reservation.grow_to(needed, wait_s=0.0)
            return
        except MemoryPressure:
            lanes.narrow()
    ctx.grow(reservation, needed)


def make_images(
    ctx: Context,
    jobs: list[ImageJob],
    step: Callable[[int, int], str],
    finished: Finished | None = None,
) -> list[ImageOutcome]:
    """All pictures at once, each under its memory reservation and the provider's pacing (which
    decide how many really run); LIROO_PANEL_CONCURRENCY caps them when set. One failure does not
    stop the others.

    ``finished`` describes a picture made, for progress to show before the request ends.
    """
    total = len(jobs)
    done = 0
    lock = threading.Lock()

    def run(index: int) -> ImageOutcome:
        nonlocal done
        job = jobs[index]
        try:
            with bounded_by(ctx):
                outcome = ImageOutcome(url=_make_in_lane(ctx, job, lanes))
        except Exception as exc:  # one picture's failure, whatever it is, must not sink the others
            note_failure(job.label, ctx.request_id, exc)
            outcome = ImageOutcome(error=exc)
        with lock:
            done += 1
            ctx.progress.advance(
                step(done, total),
                f"{job.label}: {'ready' if outcome.url else outcome.error_code}",
                finished=finished(index, outcome.url).shown() if finished and outcome.url else None,
            )
        return outcome

    if not jobs:
        return []
    workers = panel_workers(ctx.settings.panel_concurrency, total)
    lanes = Lanes(workers)
    with ThreadPoolExecutor(workers, thread_name_prefix="liroo-image") as pool:
        outcomes = list(pool.map(run, range(total)))
    ctx.stop_if_cancelled()
    return outcomes


def _make_in_lane(ctx: Context, job: ImageJob, lanes: Lanes) -> str:
    """make_image in one of the request's lanes; a picture that gives way narrows them and waits
    for a sibling to end, then tries again.

    Waiting for a lane is waiting for its own request's pictures, each bounded by its own
    waits, so only the work's deadline bounds it (not LIROO_RESERVATION_WAIT_S).
    """
    until = ctx.work_deadline
    while True:
        with lanes.lane(ctx, until):
            try:
                # Past its bound it no longer gives way: it waits for room like a lone picture.
                return make_image(ctx, job, lanes if time.monotonic() < until else None)
            except GiveWay:
                lanes.narrow()


def panel_workers(cap: int, tasks: int) -> int:
    """Threads for ``tasks`` steps of one request: one each, or LIROO_PANEL_CONCURRENCY when set (>
    0)."""
    return max(1, min(cap, tasks) if cap > 0 else tasks)
