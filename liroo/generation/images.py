"""Making pictures: cache, memory reservation, model, safe pipeline, storage; as many at once as
fit.

Each picture reserves memory from the governor before it calls the model (for
the response it will hold), grows the reservation to the decode estimate read
from the image header before decoding, and releases it once the result is
stored. When memory is short a picture waits for room (other pictures
finishing) rather than failing, up to LIROO_RESERVATION_WAIT_S; waiting
pictures of different requests take turns (the governor's reservation groups),
so one comic's panels cannot keep another comic's out.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from ..imaging import (
    ImageRejected,
    estimate_decode_mb,
    inspect_image,
    output_extension,
    process_for_storage,
)
from ..providers.base import BadOutput
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


IMAGE_COSTS = ImageCosts()


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


def make_image(ctx: Context, job: ImageJob) -> str:
    """One picture's URL; raises ProviderError, MemoryPressure, StorageError or DeadlineExceeded."""
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
    with ctx.reserve(IMAGE_COSTS.reserve_mb(settings.image_reserve_mb)) as reservation:
        result = provider.generate_image(job.prompt, job.aspect_ratio)
        response_mb = len(result.data) / (1024 * 1024)
        try:
            info = inspect_image(result.data, settings.max_image_pixels)
            decode_mb = estimate_decode_mb(info, settings.max_image_side)
            IMAGE_COSTS.record(response_mb)
            # Hold only the bytes while waiting for the decode's room (no hold-and-wait), then grow.
            reservation.shrink_to(response_mb)
            # The answer is in hand: the reading counts it from now on, not the ledger.
            reservation.hold(response_mb)
            reservation.grow_to(response_mb + decode_mb, wait_s=ctx.reservation_wait_s())
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
            outcome = ImageOutcome(url=make_image(ctx, job))
        except Exception as exc:  # one picture's failure, whatever it is, must not sink the others
            note_failure(job.label, ctx.request_id, exc)
            outcome = ImageOutcome(error=exc)
        with lock:
            done += 1
            ctx.progress.advance(
                step(done, total),
                f"{job.label}: {'ready' if outcome.url else outcome.error_code}",
                finished=finished(index, outcome.url) if finished and outcome.url else None,
            )
        return outcome

    if not jobs:
        return []
    workers = panel_workers(ctx.settings.panel_concurrency, total)
    with ThreadPoolExecutor(workers, thread_name_prefix="liroo-image") as pool:
        outcomes = list(pool.map(run, range(total)))
    ctx.stop_if_cancelled()
    return outcomes


def panel_workers(cap: int, tasks: int) -> int:
    """Threads for ``tasks`` steps of one request: one each, or LIROO_PANEL_CONCURRENCY when set (>
    0)."""
    return max(1, min(cap, tasks) if cap > 0 else tasks)
