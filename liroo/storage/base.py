"""What every storage offers, and how objects are named."""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from urllib.parse import quote

from .health import STORAGE_HEALTH

# Object names never change content (new pictures get new names, cached ones
# are named by their inputs' hash), so browsers and CDNs may keep them a year.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"

# A key: "/"-separated segments of letters, digits, "-", "_" and ".", none
# empty and none starting with "." (so no "..", no hidden or temporary files),
# no backslash, "%" or NUL. Everything media_key() makes fits; anything else
# is refused by both storages and by the /media route.
_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}(?:/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){0,7}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_DIGEST = re.compile(r"[0-9a-f]{16,128}")

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "json": "application/json",
}


class StorageError(RuntimeError):
    """A storage could not do what was asked (bad key, no base URL, backend failure)."""


class Storage(ABC):
    """Where generated media is kept. ``put`` is the same for every storage: check the key,
    write, record the storage's health for /health, answer the URL."""

    # Whether answers name media by the service's own /media/<key> address (liroo/media.py
    # serves or redirects it), rather than by the storage's URL.
    serves_media = False

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str = IMMUTABLE_CACHE,
        public_base: str | None = None,
    ) -> str:
        """Store ``data`` under ``key`` and return an absolute URL the app can fetch it from."""
        self._write(check_key(key), data, content_type, cache_control)
        STORAGE_HEALTH.succeeded()
        return self.url(key, public_base)

    @abstractmethod
    def _write(self, key: str, data: bytes, content_type: str, cache_control: str) -> None:
        """Keep ``data`` under the (checked) ``key``; a failure raises StorageError."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def url(self, key: str, public_base: str | None = None) -> str:
        """The absolute URL of the object stored under ``key``.

        ``public_base`` is the caller's ``request.host_url``, captured while a
        request was at hand: local storage uses it when BASE_URL is unset.
        """


MEDIA_PATH = "/media/"  # where the service answers for stored media (liroo/media.py)


def service_url(key: str, base: str | None) -> str:
    """The service's stable address of ``key``: absolute with ``base``, else the bare path that each
    answer makes absolute with its own request's host (liroo.media.render_urls)."""
    return f"{base.rstrip('/') if base else ''}{MEDIA_PATH}{quote(check_key(key))}"


def is_valid_key(key: str) -> bool:
    return isinstance(key, str) and _KEY.fullmatch(key) is not None


def check_key(key: str) -> str:
    if not is_valid_key(key):
        raise StorageError(f"not a valid storage key: {key!r}")
    return key


def media_key(kind: str, ext: str, *, digest: str | None = None) -> str:
    """A new object name: ``<kind>/<yyyy>/<mm>/<dd>/<uuid4>.<ext>``, or with ``digest``
    the stable content-addressed ``<kind>/cache/<digest>.<ext>`` (for the image cache)."""
    if not _SLUG.fullmatch(kind) or not _SLUG.fullmatch(ext):
        raise ValueError(f"kind and ext must be short lowercase slugs, got {kind!r}, {ext!r}")
    if digest is not None:
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"digest must be lowercase hex, got {digest!r}")
        return f"{kind}/cache/{digest}.{ext}"
    today = datetime.now(timezone.utc)
    return f"{kind}/{today:%Y/%m/%d}/{uuid.uuid4().hex}.{ext}"


def content_type_for(key: str) -> str:
    ext = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    return CONTENT_TYPES.get(ext, "application/octet-stream")
