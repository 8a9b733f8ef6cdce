"""Download links that work without the caller's token and expire (24 h by default, document 002).

On S3 a file's link is the storage's own presigned URL. Otherwise, and for folders (streamed as a ZIP), the
API signs its own: `/api/v1/files/<key>?user=&expires=&signature=`, an HMAC-SHA256 over key, user and
expiry with a key derived from the API's signing key. The files route re-checks that the key still belongs to
a model of that user, so a link dies with the model.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from weft.errors import Forbidden
from weft.registry.layout import Artifacts
from weft.settings import get_settings
from weft.storage import Storage

LINK_SECONDS = 24 * 3600
FILES_ROUTE = "/api/v1/files"


def _signature(key: str, user_id: str, expires: int) -> str:
    secret = hmac.new(get_settings().signing_key().encode(), b"weft download links", hashlib.sha256).digest()
    return hmac.new(secret, f"{key}\n{user_id}\n{expires}".encode(), hashlib.sha256).hexdigest()


def api_link(base_url: str, key: str, user_id: str, seconds: int = LINK_SECONDS, now: float | None = None) -> str:
    """A link to `key` (a file, or a folder served as a ZIP) served by the API at `base_url`."""
    expires = int((time.time() if now is None else now) + seconds)
    query = urlencode({"user": user_id, "expires": expires, "signature": _signature(key, user_id, expires)})
    return f"{base_url.rstrip('/')}{FILES_ROUTE}/{quote(key)}?{query}"


def check(key: str, user_id: str, expires: int, signature: str, now: float | None = None) -> None:
    """Raise `Forbidden` unless the link to `key` is untampered and unexpired."""
    if not hmac.compare_digest(_signature(key, user_id, expires), signature):
        raise Forbidden("invalid download link: its signature does not match", {"key": key})
    if expires < (time.time() if now is None else now):
        raise Forbidden("download link expired: ask GET /api/v1/models/{id} for a fresh one",
                        {"key": key, "expired_at": expires})


def file_link(storage: Storage, base_url: str, key: str, user_id: str, seconds: int = LINK_SECONDS) -> str:
    """A presigned S3 URL of the object `key`, or the API's signed link on file:// storage."""
    return api_link(base_url, key, user_id, seconds) if storage.is_local else storage.presign(key, seconds)


def download_links(storage: Storage, base_url: str, found: Artifacts, user_id: str,
                   objects: dict[str, tuple[str, int]]) -> tuple[dict[str, str], dict[str, str]]:
    """Document 002's `download_links` (one per artifact folder: the file itself when the folder holds one
    file, else the folder as a ZIP) and a link per file (`<folder>/<path>` → URL)."""
    per_file = {name: file_link(storage, base_url, key, user_id) for name, (key, _) in objects.items()}
    folders: dict[str, str] = {}
    for folder, key in found.folders.items():
        inside = [name for name in objects if name.startswith(f"{folder}/")]
        folders[folder] = per_file[inside[0]] if len(inside) == 1 else api_link(base_url, key, user_id)
    return folders, per_file
