"""Google Cloud Storage: uploads with content type and cache policy; signed or public URLs."""

from __future__ import annotations

import logging
import os
import threading
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
from .base import Storage, StorageError, check_key
from .health import STORAGE_HEALTH

log = logging.getLogger("liroo.storage")

# The longest a V4 signed URL may live.
MAX_SIGNED_URL_TTL_S = 7 * 24 * 3600
# The library's own timeout of one HTTP attempt.
DEFAULT_TIMEOUT_S = 60.0


class GcsStorage(Storage):
    def __init__(
        self,
        bucket_name: str,
        *,
        url_mode: str = "signed",
        signed_url_ttl_s: int = MAX_SIGNED_URL_TTL_S,
        signing_credentials: google.auth.credentials.Credentials | None = None,
        retry=DEFAULT_RETRY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if url_mode not in ("signed", "public"):
            raise SettingsError("LIROO_GCS_URL_MODE: expected signed or public")
        if not 1 <= signed_url_ttl_s <= MAX_SIGNED_URL_TTL_S:
            raise SettingsError(
                f"LIROO_SIGNED_URL_TTL_S: expected 1 to {MAX_SIGNED_URL_TTL_S} (7 days, the V4 "
                "limit)"
            )
        self.bucket_name = bucket_name
        self.url_mode = url_mode
        self.signed_url_ttl = timedelta(seconds=signed_url_ttl_s)
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
        blob = self._bucket().blob(check_key(key))
        if self.url_mode == "public":
            return blob.public_url  # https://storage.googleapis.com/<bucket>/<key>
        with _failures("URL signing", key):
            return blob.generate_signed_url(
                version="v4", method="GET", expiration=self.signed_url_ttl, **self._signer()
            )

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
