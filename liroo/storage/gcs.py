"""Google Cloud Storage: uploads with content type and cache policy; URLs that last.

Answers name media by URLs the app keeps: it stores lecture audio in its history
and plays it weeks later, and a V4 signed URL dies after 7 days at most. So in
the default ``redirect`` mode an answer carries the service's own stable
address, ``<BASE_URL>/media/<key>``, and the /media route (liroo/media.py)
answers it with a 302 to a freshly signed URL of a short life: the bucket stays
private (students' work is not world-readable, and organisations that enforce
public access prevention keep working), and a link lasts as long as its object.
``public`` mode answers plain object URLs for a public bucket, ready for Cloud
CDN; object names never change content, so both are cached as immutable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.api_core.exceptions import GoogleAPIError, PreconditionFailed
from google.cloud import storage
from google.cloud.storage.exceptions import InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

from ..settings import SettingsError
from .base import Storage, StorageError, check_key, service_url
from .health import STORAGE_HEALTH

log = logging.getLogger("liroo.storage")

# The longest a V4 signed URL may live.
MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600
URL_MODES = ("redirect", "public")
# Signed URLs kept per process for reuse, so that a media fetch rarely signs (on Cloud Run signing
# is a call to IAM's signBlob). A cache, not a budget: per worker is fine.
_SIGNED_CACHE_SIZE = 1024
# The library's own timeout of one HTTP attempt.
DEFAULT_TIMEOUT_S = 60.0


class GcsStorage(Storage):
    def __init__(
        self,
        bucket_name: str,
        *,
        url_mode: str = "redirect",
        signed_url_ttl_s: int = 3600,
        base_url: str | None = None,
        signing_credentials: google.auth.credentials.Credentials | None = None,
        retry=DEFAULT_RETRY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if url_mode not in URL_MODES:
            raise SettingsError("LIROO_GCS_URL_MODE: expected redirect or public")
        if not 1 <= signed_url_ttl_s <= MAX_SIGNED_URL_TTL_S:
            raise SettingsError(
                f"LIROO_SIGNED_URL_TTL_S: expected 1 to {MAX_SIGNED_URL_TTL_S} (7 days, the V4 "
                "limit)"
            )
        self.bucket_name = bucket_name
        self.url_mode = url_mode
        self.serves_media = url_mode == "redirect"
        self.base_url = base_url.rstrip("/") if base_url else None
        self.signed_url_ttl = timedelta(seconds=signed_url_ttl_s)
        self._signed: dict[str, tuple[float, str]] = {}  # key -> (reuse until, signed URL)
        # ``retry`` bounds the whole call, retries included (LIROO_GCS_RETRY_DEADLINE_S; the
        # library's default is 120 s); one attempt never waits longer than that either.
        self.retry = retry
        self.timeout_s = min(timeout_s, DEFAULT_TIMEOUT_S)
        self._signing_credentials = (
            signing_credentials  # None: google.auth.default(), found when first needed
        )
        self._lock = threading.Lock()
        self._client: storage.Client | None = None
        self._client_pid = 0

    def _write(self, key: str, data: bytes, content_type: str, cache_control: str) -> None:
        blob = self._bucket().blob(key)
        blob.cache_control = cache_control
        with _failures("upload", key):
            try:
                # if_generation_match=0: create only. That makes the upload
                # idempotent, so the library's retry policy may repeat it safely
                # after a transient error, even one that hid a success.
                blob.upload_from_string(
                    data,
                    content_type=content_type,
                    if_generation_match=0,
                    retry=self.retry,
                    timeout=self.timeout_s,
                )
            except PreconditionFailed:
                # Already there: a retried upload that had succeeded, or a
                # content-addressed (cache) key, whose content is the same by definition.
                log.debug("object %s already exists; kept", key)

    def exists(self, key: str) -> bool:
        blob = self._bucket().blob(check_key(key))
        with _failures("existence check", key):
            return blob.exists(retry=self.retry, timeout=self.timeout_s)

    def url(self, key: str, public_base: str | None = None) -> str:
        if self.url_mode == "public":
            return self._bucket().blob(check_key(key)).public_url  # storage.googleapis.com/<b>/<k>
        return service_url(key, self.base_url or public_base)

    def signed_url(self, key: str) -> tuple[str, float]:
        """A V4 signed URL for ``key`` and how many more seconds it may be handed out (it is
        reused for half its life, so a client always has at least half left)."""
        now = time.monotonic()
        kept = self._signed.get(key)
        if kept is not None and kept[0] > now:
            return kept[1], kept[0] - now
        blob = self._bucket().blob(check_key(key))
        with _failures("URL signing", key):
            url = blob.generate_signed_url(
                version="v4", method="GET", expiration=self.signed_url_ttl, **self._signer()
            )
        reuse_s = self.signed_url_ttl.total_seconds() / 2
        if len(self._signed) >= _SIGNED_CACHE_SIZE:
            self._signed.clear()  # bounded; signing again is cheap next to a leak
        self._signed[key] = (now + reuse_s, url)
        return url, reuse_s

    def _bucket(self) -> storage.Bucket:
        # Made lazily and once per process: gunicorn preloads the app and then
        # forks, and a client's connection pool must not be shared across a fork.
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = storage.Client()
                    self._client_pid = os.getpid()
        return self._client.bucket(self.bucket_name)

    def _signer(self) -> dict:
        """Arguments for generate_signed_url: a key that signs locally, or IAM signBlob."""
        with self._lock:
            if self._signing_credentials is None:
                self._signing_credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            credentials = self._signing_credentials
            if isinstance(credentials, google.auth.credentials.Signing):
                return {"credentials": credentials}  # a service-account key: signs locally
            # Cloud Run's default service account has no private key: the
            # library asks IAM's signBlob to sign (the account needs
            # roles/iam.serviceAccountTokenCreator on itself) with a fresh
            # token. Refreshing first also replaces the "default" placeholder
            # with the account's real e-mail address.
            if not credentials.valid:
                credentials.refresh(google.auth.transport.requests.Request())
            return {
                "service_account_email": credentials.service_account_email,
                "access_token": credentials.token,
            }


@contextmanager
def _failures(action: str, key: str):
    """Whatever the client raises once its retries are spent becomes one StorageError for
    callers."""
    try:
        yield
    except (
        GoogleAPIError,
        InvalidResponse,
        google.auth.exceptions.GoogleAuthError,
        requests.RequestException,
    ) as exc:
        log.warning("cloud storage %s failed for %s: %s", action, key, exc)
        STORAGE_HEALTH.failed()
        raise StorageError(f"cloud storage {action} failed") from exc
