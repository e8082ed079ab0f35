"""Local storage: files under LIROO_MEDIA_DIR, served by the app at /media/<key>."""

from __future__ import annotations

import os
import tempfile

from werkzeug.security import safe_join

from .base import Storage, StorageError, is_valid_key, service_url
from .health import STORAGE_HEALTH


class LocalStorage(Storage):
    serves_media = True

    def __init__(self, root: str, base_url: str | None = None) -> None:
        # The real path, so that resolve() can tell a symlink anywhere below it.
        self.root = os.path.realpath(root)
        self.base_url = base_url.rstrip("/") if base_url else None

    def _write(self, key: str, data: bytes, content_type: str, cache_control: str) -> None:
        # content_type and cache_control are implied here: the /media route
        # derives the type from the extension and serves every key as immutable.
        path = self._path(key)
        try:
            self._replace_file(path, data)
        except OSError as exc:
            # A full disk (ENOSPC), a read-only or failing one: the storage's fault, not the
            # request's. Callers answer 503 storage_unavailable; /health reports it.
            STORAGE_HEALTH.failed(exc.errno)
            raise StorageError(
                f"local storage write failed: {exc.strerror or type(exc).__name__}"
            ) from exc

    @staticmethod
    def _replace_file(path: str, data: bytes) -> None:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        # Write a temporary file beside the target and rename it over: readers
        # see either nothing or the whole file. Its name starts with "." so it
        # can never be requested (keys may not have such segments).
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def exists(self, key: str) -> bool:
        path = self.resolve(key)
        return path is not None and os.path.isfile(path)

    def url(self, key: str, public_base: str | None = None) -> str:
        """The absolute URL from BASE_URL (or ``public_base``); without either, the path
        ``/media/<key>``.

        A bare path is what results store when BASE_URL is unset: each answer
        makes it absolute with its own request's host (liroo.media.render_urls),
        so no stored result carries another request's Host header.
        """
        return service_url(key, self.base_url or public_base)

    def resolve(self, key: str) -> str | None:
        """The file for ``key`` if it is safely inside the media folder, else None.

        Refuses malformed keys (``..``, absolute, backslashes, NUL ...), then
        joins with werkzeug's ``safe_join`` and requires the real path to be the
        joined path itself: a symlink anywhere on the way (even one pointing
        inside) is refused, since this storage never makes any.
        """
        if not is_valid_key(key):
            return None
        joined = safe_join(self.root, key)
        if joined is None or os.path.realpath(joined) != joined:
            return None
        return joined

    def _path(self, key: str) -> str:
        joined = safe_join(self.root, key)
        if joined is None:
            raise StorageError(f"not a valid storage key: {key!r}")
        return joined
