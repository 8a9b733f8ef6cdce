"""The saved Prefect block where weft's resumable steps persist their results."""

from __future__ import annotations

from prefect.filesystems import LocalFileSystem, RemoteFileSystem

from weft.settings import Settings, get_settings


def save_result_storage(settings: Settings | None = None) -> str:
    """Save (or update) the result-storage block next to weft's object storage; returns its slug.

    `file://` storage gets a LocalFileSystem block, anything else (s3://...) a RemoteFileSystem
    block with the same fsspec options, so workers on other machines read the same cache.
    """
    settings = settings or get_settings()
    slug = settings.result_storage_block
    name = slug.split("/", 1)[1]
    if settings.storage_root.startswith("file://"):
        block = LocalFileSystem(basepath=str(settings.home_dir / "results"))
    else:
        block = RemoteFileSystem(basepath=f"{settings.storage_root.rstrip('/')}/prefect-results",
                                 settings=settings.storage_options)
    block.save(name, overwrite=True)
    return slug
