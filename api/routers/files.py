"""Signed download links of the API (`weft.registry.links`): no token, a signature and an expiry instead.
A file is served with `Range` support; a folder as a ZIP streamed while it is built."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import PurePosixPath

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from api.deps import SessionDep
from weft.errors import Forbidden, NotFound
from weft.registry import links, records
from weft.registry.archive import Member, stream_zip
from weft.storage import CHUNK, Storage, get_storage

router = APIRouter(prefix="/files", tags=["models"])


BINARY = {"schema": {"type": "string", "format": "binary"}}


def _chunks(storage: Storage, key: str) -> Iterator[bytes]:
    with storage.open_read(key) as f:
        while chunk := f.read(CHUNK):
            yield chunk


@router.head("/{key:path}", response_class=Response, include_in_schema=False)
@router.get("/{key:path}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": BINARY, "application/zip": BINARY},
                             "description": "the file, or the folder as a ZIP"},
                       206: {"content": {"application/octet-stream": BINARY}, "description": "the requested byte range"},
                       403: {"description": "tampered, expired, or no longer the user's"}})
def signed_file(key: str, request: Request, session: SessionDep, user: str = Query(...),
                expires: int = Query(...), signature: str = Query(...)) -> Response:
    """The object (or folder, as a ZIP) a download link of `GET /models/{id}` points at."""
    links.check(key, user, expires, signature)
    storage = get_storage()
    if not records.owns(session, storage, user, key):
        raise Forbidden("this download link's file no longer belongs to its model (deleted?)", {"key": key})
    objects = storage.objects(key)
    if not objects:
        raise NotFound.of("file", key)
    name = PurePosixPath(key).name
    if len(objects) == 1 and next(iter(objects.values()))[0] == key.strip("/"):  # one object: the file itself
        if (path := storage.local_path(key)) is not None:
            return FileResponse(path, filename=name, media_type="application/octet-stream")
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if request.method == "HEAD":
            return Response(media_type="application/octet-stream", headers=headers)
        return StreamingResponse(_chunks(storage, key), media_type="application/octet-stream", headers=headers)
    headers = {"Content-Disposition": f'attachment; filename="{name}.zip"'}
    if request.method == "HEAD":
        return Response(media_type="application/zip", headers=headers)
    parts = [Member(f"{name}/{rel}", partial(storage.open_read, obj), size) for rel, (obj, size) in objects.items()]
    return StreamingResponse(stream_zip(parts), media_type="application/zip", headers=headers)
