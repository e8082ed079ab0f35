"""Every setting of the service, read from the environment once, in one place.

Each field is one line, ``name: type = _setting(ENV_NAME, default[, parse])``,
and the docstring under it says what it means; the README's settings table
lists the same (``scripts/settings-table``; a test keeps the two in step). Names
from the operations guide keep their names; the rest carry the ``LIROO_``
prefix. ``None`` means "not set": the code that uses it derives a value.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected on/off, got {raw!r}")


def _opt_str(raw: str) -> str | None:
    return raw.strip() or None


def _opt_bool(raw: str) -> bool | None:
    return _bool(raw) if raw.strip() else None


def _opt_float(raw: str) -> float | None:
    return float(raw) if raw.strip() else None


def _choice(*allowed: str, optional: bool = False) -> Callable[[str], str | None]:
    def parse(raw: str) -> str | None:
        value = raw.strip().lower()
        if optional and not value:
            return None
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return value

    return parse


# Bit rates an MP3 stream can have (MPEG-1 and MPEG-2 layer III).
MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)


def _mp3_bitrate(raw: str) -> int:
    value = int(raw)
    if value not in MP3_BITRATES:
        raise ValueError(
            f"expected an MP3 bit rate ({', '.join(map(str, MP3_BITRATES))}), got {raw!r}"
        )
    return value


def _setting(env: str, default: Any, parse: Callable[[str], Any] | None = None) -> Any:
    """A setting read from ``env``; ``parse`` defaults by the default's type (bool, int, float,
    else str). Its meaning is the docstring on the line after it."""
    if parse is None:
        parse = {bool: _bool, int: int, float: float}.get(type(default), str)
    return field(default=default, metadata={"env": env, "parse": parse})


@dataclass(frozen=True)
class Settings:
    # --- server -------------------------------------------------------------
    port: int = _setting("PORT", 8080)
    """Port gunicorn listens on."""
    bind_host: str = _setting("LIROO_BIND", "127.0.0.1")
    """Address gunicorn listens on: this machine only by default (0.0.0.0 opens it to the
    network; the container image sets 0.0.0.0, so Cloud Run is unchanged)."""
    base_url: str | None = _setting("BASE_URL", None, _opt_str)
    """Public base URL for links to local media; unset: each answer's own request host (stored
    results keep paths)."""
    workers: int = _setting("WEB_CONCURRENCY", 2)
    """gunicorn worker processes (two, so a recycle never leaves none)."""
    threads: int = _setting("LIROO_THREADS", 20)
    """Threads per worker; workers x threads covers Cloud Run's --concurrency 40."""
    worker_timeout_s: int = _setting("LIROO_WORKER_TIMEOUT_S", 120)
    """gunicorn heartbeat timeout: a worker silent this long is restarted."""
    graceful_timeout_s: int = _setting("LIROO_GRACEFUL_TIMEOUT_S", 8)
    """Seconds a stopping worker gets to finish in-flight requests (Cloud Run grants 10)."""
    max_requests: int = _setting("LIROO_MAX_REQUESTS", 1000)
    """Requests after which a worker is recycled (0: never)."""
    max_requests_jitter: int = _setting("LIROO_MAX_REQUESTS_JITTER", 100)
    """Random extra requests so workers do not recycle together."""
    client_timeout_s: float = _setting("LIROO_CLIENT_TIMEOUT_S", 5.0)
    """Longest silence while a request arrives (line, headers, body); then the connection is
    closed, with a JSON 408 once part of a request came."""
    client_request_timeout_s: float = _setting("LIROO_CLIENT_REQUEST_TIMEOUT_S", 30.0)
    """Longest a whole request (line, headers and body) may take to arrive; then 408."""
    client_send_timeout_s: float = _setting("LIROO_CLIENT_SEND_TIMEOUT_S", 30.0)
    """Longest a client may leave its answer unread (nothing taken at all); then the connection
    is closed. The unread rest waits in the worker's loop, not in a thread."""
    request_deadline_s: float = _setting("LIROO_REQUEST_DEADLINE_S", 1800.0)
    """Longest a generation request may keep working (also after its answer deadline
    LIROO_DEADLINE_S, so a retry can join it) before it fails with a timeout; at least
    LIROO_DEADLINE_S."""
    deadline_enabled: bool = _setting("LIROO_DEADLINE", True)
    """on: every request carries a deadline (below) that bounds its waits and its answer: a 503
    with Retry-After (from the measured drain rate) if its work is not done, the work going on
    for the retry to join; off: fixed waits, LIROO_RETRY_AFTER_S, and an answer when the work
    ends (with LIROO_ADMISSION_WAIT_S=15: the benchmarks' baseline)."""
    deadline_s: float = _setting("LIROO_DEADLINE_S", 55.0)
    """Generation routes (POST): an answer, or a 503 with Retry-After, is sent within this many
    seconds (the app gives up after 60 s); a client's X-Request-Timeout-Ms can shorten it."""
    read_deadline_s: float = _setting("LIROO_READ_DEADLINE_S", 25.0)
    """The same for reads (GET/HEAD: health, progress, jobs, media; the app's /health timeout is
    30 s)."""

    # --- memory governor -----------------------------------------------------
    governor_enabled: bool = _setting("LIROO_GOVERNOR", True)
    """on: the memory governor wraps the app; off: unwrapped (benchmarks only)."""
    memory_limit_mb: float | None = _setting("MEMORY_LIMIT_MB", None, _opt_float)
    """Hard limit: requests are shed with 503 above it. Unset: 75% of the cgroup limit, else
    1500."""
    force_gc_threshold_mb: float | None = _setting("FORCE_GC_THRESHOLD_MB", None, _opt_float)
    """Cleanup (gc + malloc_trim) after responses above it. Unset: 60% of the cgroup limit (80%
    of MEMORY_LIMIT_MB when that is set), else 1200."""
    memory_warning_mb: float | None = _setting("MEMORY_WARNING_MB", None, _opt_float)
    """Warning level (cheap malloc_trim, reported in /health). Unset: 50% of the cgroup limit
    (2/3 of MEMORY_LIMIT_MB when that is set), else 1000."""
    gc_min_interval_s: float = _setting("LIROO_GC_MIN_INTERVAL_S", 1.0)
    """Least time between two cleanups in one worker."""
    retry_after_s: int = _setting("LIROO_RETRY_AFTER_S", 5)
    """Retry-After seconds on a 503 for memory pressure."""
    worker_recycle_mb: float | None = _setting("LIROO_WORKER_RECYCLE_MB", None, _opt_float)
    """A worker whose RSS stays above this is recycled gracefully. Unset: half the hard limit."""
    recycle_strikes: int = _setting("LIROO_RECYCLE_STRIKES", 3)
    """Consecutive checks above LIROO_WORKER_RECYCLE_MB before a recycle."""
    recycle_min_age_s: float = _setting("LIROO_RECYCLE_MIN_AGE_S", 10.0)
    """A worker younger than this is never recycled for memory."""
    recycle_check_interval_s: float = _setting("LIROO_RECYCLE_CHECK_INTERVAL_S", 5.0)
    """Seconds between two RSS checks of a worker."""
    mmap_threshold_kb: int = _setting("LIROO_MMAP_THRESHOLD_KB", 8192)
    """While memory is at or above the cleanup line, allocations above this (Pillow's 16 MB image
    blocks, whole decoded pictures) get their own mmap, so they leave the process the moment they
    are freed; below it the threshold is 32 MB, so buffers are reused from the heap (less CPU),
    and a worker's free heap is trimmed when its costed requests are done (glibc; 0: glibc's
    moving threshold, never changed)."""
    reservation_wait_s: float = _setting("LIROO_RESERVATION_WAIT_S", 60.0)
    """How long a heavy step (an image) waits for memory before it fails with 503."""
    admission_wait_s: float = _setting("LIROO_ADMISSION_WAIT_S", 40.0)
    """Longest a request that makes pictures or speech waits at the door for memory (in one FIFO
    line for all workers) before it is refused with 503 (0: refuse at once); with deadlines it also
    ends by the deadline minus the route's expected service time. A refusal costs a student 4-16 s
    of back-off and loses a narration (the app does not retry one), so it waits while it can still
    be answered in time. With LIROO_DEADLINE=off nothing else bounds it: set 15 (the default before
    deadlines), or a wait and its work can outlast the app's 60 s."""
    admission_queue: int = _setting("LIROO_ADMISSION_QUEUE", 32)
    """Most requests waiting at the door, all workers together; more are refused at once."""
    admission_caller_share: float = _setting("LIROO_ADMISSION_CALLER_SHARE", 0.5)
    """Share of the door's line one caller (its API key, else its address) may hold; more of its
    requests are refused at once (at least one place each)."""
    image_reserve_mb: float = _setting("LIROO_IMAGE_RESERVE_MB", 48.0)
    """Memory reserved for one image while the model makes it (its decode is reserved from the
    header)."""

    # --- images ---------------------------------------------------------------
    max_image_pixels: int = _setting("LIROO_MAX_IMAGE_PIXELS", 40_000_000)
    """Images with more pixels are refused before decoding."""
    max_image_side: int = _setting("LIROO_MAX_IMAGE_SIDE", 1024)
    """Stored images fit within this many pixels a side."""
    image_format: str = _setting("LIROO_IMAGE_FORMAT", "jpeg", _choice("jpeg", "webp", "png"))
    """Stored image format: jpeg, webp or png."""
    image_quality: int = _setting("LIROO_IMAGE_QUALITY", 85)
    """JPEG/WebP quality (1-95)."""
    image_cache: bool = _setting("LIROO_IMAGE_CACHE", True)
    """on: a repeated picture request reuses the stored image."""

    # --- speech ---------------------------------------------------------------
    audio_format: str = _setting("LIROO_AUDIO_FORMAT", "mp3", _choice("mp3", "wav"))
    """Stored speech format: mp3 (~5 kB per second of speech) or wav (~48 kB)."""
    audio_bitrate_kbps: int = _setting("LIROO_AUDIO_BITRATE_KBPS", 40, _mp3_bitrate)
    """MP3 bit rate of stored speech, kbit/s (constant)."""
    speech_reserve_mb: float = _setting("LIROO_SPEECH_RESERVE_MB", 24.0)
    """Least memory reserved for one speech chunk (~1,500 characters) while the model reads it
    (more once recent chunks held more); also /generate_tts's cost at the door."""

    # --- storage --------------------------------------------------------------
    storage: str | None = _setting("LIROO_STORAGE", None, _choice("local", "gcs", optional=True))
    """local or gcs. Unset: gcs when GCS_BUCKET_NAME is set, else local."""
    media_dir: str = _setting("LIROO_MEDIA_DIR", "./media")
    """Folder for local storage, served at /media/<key>."""
    gcs_bucket_name: str | None = _setting("GCS_BUCKET_NAME", None, _opt_str)
    """Google Cloud Storage bucket for generated media."""
    gcs_url_mode: str = _setting("LIROO_GCS_URL_MODE", "redirect", _choice("redirect", "public"))
    """redirect: answers carry the service's stable /media/<key> address, which redirects to a
    fresh signed URL (a private bucket; links last as long as their objects); public: plain
    object URLs for a public bucket (ready for Cloud CDN)."""
    signed_url_ttl_s: int = _setting("LIROO_SIGNED_URL_TTL_S", 3600)
    """Lifetime of the signed URL a /media redirect hands out (7 days at most); each is reused
    for half its life."""
    gcs_retry_deadline_s: float = _setting("LIROO_GCS_RETRY_DEADLINE_S", 30.0)
    """Longest a Cloud Storage call keeps retrying before the request fails with 503
    storage_unavailable (the library's own default is 120 s); also caps one attempt's timeout."""

    # --- model provider -------------------------------------------------------
    provider: str | None = _setting(
        "LIROO_PROVIDER", None, _choice("gemini", "offline", optional=True)
    )
    """gemini or offline. Unset: gemini when GENAI_API_KEY is set, else offline."""
    genai_api_key: str | None = _setting("GENAI_API_KEY", None, _opt_str)
    """Gemini API key."""
    gemini_base_url: str | None = _setting("LIROO_GEMINI_BASE_URL", None, _opt_str)
    """Send Gemini calls here instead of Google (a proxy, or the test server)."""
    text_model: str = _setting("LIROO_TEXT_MODEL", "gemini-2.5-flash")
    """Model for structured text."""
    image_model: str = _setting("LIROO_IMAGE_MODEL", "gemini-2.5-flash-image")
    """Model for images."""
    tts_model: str = _setting("LIROO_TTS_MODEL", "gemini-2.5-flash-preview-tts")
    """Model for speech."""
    gemini_rpm: int = _setting("LIROO_GEMINI_RPM", 60)
    """Requests per minute per model for the whole service (the project's quota): shared through
    Redis by every instance when REDIS_URL is set, else by this instance's workers. Bursts of
    LIROO_MAX_PANELS (or a tenth of the figure if that is more; never more than the figure) go at
    once, so a comic's pictures start together (0: unpaced)."""
    gemini_timeout_s: float = _setting("LIROO_GEMINI_TIMEOUT_S", 120.0)
    """Timeout of one Gemini HTTP call."""
    gemini_retry_attempts: int = _setting("LIROO_GEMINI_RETRY_ATTEMPTS", 4)
    """Attempts per Gemini call, the first included."""
    gemini_retry_initial_s: float = _setting("LIROO_GEMINI_RETRY_INITIAL_S", 1.0)
    """First retry delay; it doubles, with jitter."""
    gemini_retry_max_s: float = _setting("LIROO_GEMINI_RETRY_MAX_S", 30.0)
    """Longest delay between two retries."""
    offline_image_delay_s: float = _setting("LIROO_OFFLINE_IMAGE_DELAY_S", 0.0)
    """Seconds the offline provider takes per picture, as a model would (demos, and the browser
    tests that watch panels arrive one by one); 0: at once."""

    # --- generation -----------------------------------------------------------
    max_panels: int = _setting("LIROO_MAX_PANELS", 8)
    """Most panels in a comic (at least 3 are made)."""
    panel_concurrency: int = _setting("LIROO_PANEL_CONCURRENCY", 0)
    """Optional cap on pictures made at once for one request, speech chunks likewise (0: no cap;
    memory reservations and the Gemini pacing decide)."""
    max_input_chars: int = _setting("LIROO_MAX_INPUT_CHARS", 20_000)
    """Longest input text accepted, in characters as a person counts them (grapheme clusters; 413
    above it)."""
    max_long_text_chars: int = _setting("LIROO_MAX_LONG_TEXT_CHARS", 50_000)
    """Longest text where the app sends a whole story: /generate_tts's text and /process dialogue
    context (413 above it)."""
    job_ttl_s: int = _setting("LIROO_JOB_TTL_S", 3600)
    """How long a finished request's progress and result stay answerable."""
    derived_replay_s: float = _setting("LIROO_DERIVED_REPLAY_S", 120.0)
    """How long after it finished a request without an id is replayed to the same body and
    caller; later it runs afresh."""
    async_mode: bool | None = _setting("LIROO_ASYNC", None, _opt_bool)
    """on: 'Prefer: respond-async' answers 202 and works in the background (on Cloud Run only
    with CPU always allocated: deploy with --async); off: such requests are answered
    synchronously. Unset: off on Cloud Run (K_SERVICE set), else on."""
    redis_url: str | None = _setting("REDIS_URL", None, _opt_str)
    """Redis for jobs, progress, rate limits and Gemini pacing shared by all instances; unset:
    shared by this instance's workers only."""
    redis_read_timeout_s: float = _setting("LIROO_REDIS_READ_TIMEOUT_S", 0.5)
    """Longest wait for a Redis read (progress, /jobs, /ready's probe): a slower Redis counts as
    down for reads, like an outage, so no thread waits on it."""
    id_secret: str | None = _setting("LIROO_ID_SECRET", None, _opt_str)
    """Secret keying the ids derived for requests without one (HMAC), the same on every instance;
    unset: one made once in Redis (REDIS_URL), else one per instance."""
    joins_per_request: int = _setting("LIROO_JOINS_PER_REQUEST", 2)
    """Where a join cannot be parked in the worker's loop (TLS in gunicorn, a test client):
    retries of one running request a worker lets wait for it at once (each holds a thread); more
    get 503 with Retry-After. Parked joins hold no thread and have no cap."""

    # --- security ------------------------------------------------------------
    api_keys: str | None = _setting("LIROO_API_KEYS", None, _opt_str)
    """Comma-separated keys; when set, generation requires one."""
    api_keys_file: str | None = _setting("LIROO_API_KEYS_FILE", None, _opt_str)
    """File with one API key per line (instead of LIROO_API_KEYS)."""
    admin_token: str | None = _setting("LIROO_ADMIN_TOKEN", None, _opt_str)
    """When set, /memory, /metrics and other callers' /jobs and /progress require it."""
    rate_limit: str | None = _setting("LIROO_RATE_LIMIT", None, _opt_str)
    """Rate limit for generation per key or client address, e.g. '30 per minute'; unset: none."""
    trusted_proxies: int = _setting("LIROO_TRUSTED_PROXIES", 0)
    """Proxies in front whose X-Forwarded-For and X-Forwarded-Proto are trusted (Cloud Run: 1)."""
    max_body_bytes: int = _setting("LIROO_MAX_BODY_BYTES", 1024 * 1024)
    """Largest request body (413 above it)."""

    # --- logging ---------------------------------------------------------------
    log_format: str | None = _setting(
        "LIROO_LOG_FORMAT", None, _choice("json", "text", optional=True)
    )
    """json or text. Unset: json on Cloud Run (K_SERVICE set), else text."""
    log_level: str = _setting("LIROO_LOG_LEVEL", "INFO")
    """Log level; prompts and user text only at DEBUG."""
    cloud_run_service: str | None = _setting("K_SERVICE", None, _opt_str)
    """Set by Cloud Run; turns on JSON logs."""
    gcp_project: str | None = _setting("GOOGLE_CLOUD_PROJECT", None, _opt_str)
    """Project id for log trace links (logging.googleapis.com/trace)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read every setting from ``environ`` (default ``os.environ``); ``overrides`` win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise SettingsError(f"{f.metadata['env']}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.storage not in (None, "local", "gcs"):
            raise SettingsError("LIROO_STORAGE: expected local or gcs")
        if self.provider not in (None, "offline", "gemini"):
            raise SettingsError("LIROO_PROVIDER: expected offline or gemini")
        if self.log_format not in (None, "json", "text"):
            raise SettingsError("LIROO_LOG_FORMAT: expected json or text")
        if self.deadline_s <= 0 or self.read_deadline_s <= 0:
            raise SettingsError("LIROO_DEADLINE_S and LIROO_READ_DEADLINE_S must be positive")
        if self.request_deadline_s < self.deadline_s:
            raise SettingsError("LIROO_REQUEST_DEADLINE_S must be at least LIROO_DEADLINE_S")
        if not 0 < self.admission_caller_share <= 1:
            raise SettingsError("LIROO_ADMISSION_CALLER_SHARE: expected a share in (0, 1]")

    # Derived choices, so that every caller decides them the same way.
    @property
    def storage_backend(self) -> str:
        return self.storage or ("gcs" if self.gcs_bucket_name else "local")

    @property
    def provider_name(self) -> str:
        return self.provider or ("gemini" if self.genai_api_key else "offline")

    @property
    def async_enabled(self) -> bool:
        """Background work only where it really runs: Cloud Run throttles the CPU after a response
        unless told."""
        return self.async_mode if self.async_mode is not None else not self.cloud_run_service

    @property
    def json_logs(self) -> bool:
        return self.log_format == "json" if self.log_format else bool(self.cloud_run_service)


def documented_settings() -> list[tuple[str, Any, str]]:
    """(environment variable, default, description) for every setting, in order; a setting
    without a docstring is an error."""
    docs = _field_docstrings(Settings)
    fields = dataclasses.fields(Settings)
    missing = [f.name for f in fields if f.name not in docs]
    if missing:
        raise SettingsError(f"settings without a docstring: {', '.join(missing)}")
    return [(f.metadata["env"], f.default, docs[f.name]) for f in fields]


def _field_docstrings(cls: type) -> dict[str, str]:
    """The string after each annotated field of ``cls``'s source, white space folded to one
    space (Python keeps no such docstring at runtime, so it is read from the source)."""
    (class_def,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    assert isinstance(class_def, ast.ClassDef)
    docs = {}
    for field_node, after in itertools.pairwise(class_def.body):
        if (
            isinstance(field_node, ast.AnnAssign)
            and isinstance(field_node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field_node.target.id] = " ".join(after.value.value.split())
    return docs
