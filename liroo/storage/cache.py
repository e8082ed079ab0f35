"""The image cache: a repeated picture request reuses the stored image instead of calling the model.

A picture is named by a hash of everything that decides it (prompt, style,
level, aspect ratio, model), so the same request finds the same object in
either storage. Callers check ``settings.image_cache`` (LIROO_IMAGE_CACHE).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata

from ..metrics import IMAGE_CACHE
from .base import Storage, media_key

# Bump to invalidate every cached picture (e.g. after a change to the pipeline's output).
_CACHE_VERSION = 1


def image_cache_key(
    prompt: str, style: str | None, level: str | None, aspect_ratio: str | None, model: str
) -> str:
    """sha256 (hex) of the normalized inputs.

    Normalization only removes differences that cannot change the picture:
    Unicode form (NFC) and runs of whitespace everywhere; letter case too for
    the style, level, aspect ratio and model, which are names, not prose.
    """
    fields = [
        _CACHE_VERSION,
        _text(prompt),
        _name(style),
        _name(level),
        _name(aspect_ratio),
        _name(model),
    ]
    # JSON keeps the fields apart: no separator inside a prompt can shift them.
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()


def image_cache_object(digest: str, extension: str) -> str:
    """The storage key of a cached picture: ``images/cache/<digest>.<ext>``."""
    return media_key("images", extension, digest=digest)


def cached_url(storage: Storage, key: str, public_base: str | None = None) -> str | None:
    """The URL of the picture stored under ``key``, or None; counts a hit or a miss in /metrics."""
    if storage.exists(key):
        IMAGE_CACHE.labels("hit").inc()
        return storage.url(key, public_base)
    IMAGE_CACHE.labels("miss").inc()
    return None


def _text(value: str | None) -> str:
    return " ".join(unicodedata.normalize("NFC", value or "").split())


def _name(value: str | None) -> str:
    return _text(value).casefold()
