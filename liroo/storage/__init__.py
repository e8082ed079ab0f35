"""Where generated media goes: the local media folder (default) or Google Cloud Storage."""

from __future__ import annotations

from ..settings import Settings, SettingsError
from .base import IMMUTABLE_CACHE, Storage, StorageError, content_type_for, media_key
from .cache import cached_url, image_cache_key, image_cache_object
from .health import STORAGE_ERRNOS, STORAGE_HEALTH
from .local import LocalStorage

__all__ = [
    "IMMUTABLE_CACHE",
    "LocalStorage",
    "STORAGE_ERRNOS",
    "STORAGE_HEALTH",
    "Storage",
    "StorageError",
    "cached_url",
    "content_type_for",
    "image_cache_key",
    "image_cache_object",
    "make_storage",
    "media_key",
]


def make_storage(settings: Settings) -> Storage:
    """Local unless the settings choose Google Cloud Storage (LIROO_STORAGE=gcs or GCS_BUCKET_NAME
    set)."""
    if settings.storage_backend == "gcs":
        if not settings.gcs_bucket_name:
            raise SettingsError("LIROO_STORAGE=gcs needs GCS_BUCKET_NAME")
        from google.cloud.storage.retry import DEFAULT_RETRY

        from .gcs import GcsStorage  # imported only when used: google-cloud-storage is heavy

        return GcsStorage(
            settings.gcs_bucket_name,
            url_mode=settings.gcs_url_mode,
            signed_url_ttl_s=settings.signed_url_ttl_s,
            base_url=settings.base_url,
            retry=DEFAULT_RETRY.with_timeout(settings.gcs_retry_deadline_s),
            timeout_s=settings.gcs_retry_deadline_s,
        )
    return LocalStorage(settings.media_dir, base_url=settings.base_url)
