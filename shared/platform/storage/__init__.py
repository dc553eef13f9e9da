"""Artifact stores: a local directory by default, MinIO/S3 when an endpoint is configured.

The S3 client is imported only when an S3 store is used, so the local store works where the `minio`
package is not installed (a GPU machine running an in-process evaluation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twinray.shared.platform.config import Settings
from twinray.shared.platform.storage.base import ArtifactRef, ArtifactStore, sha256_bytes, sha256_file
from twinray.shared.platform.storage.local import LocalStore

if TYPE_CHECKING:
    from twinray.shared.platform.storage.minio_store import MinioStore

__all__ = ["ArtifactRef", "ArtifactStore", "LocalStore", "MinioStore", "open_store", "sha256_bytes", "sha256_file"]


def __getattr__(name: str) -> Any:
    if name == "MinioStore":
        from twinray.shared.platform.storage.minio_store import MinioStore

        return MinioStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: `store_endpoint` empty -> `store_root` on disk, else that S3 server."""
    if not settings.store_endpoint:
        return LocalStore(settings.store_root, settings.store_bucket)
    from twinray.shared.platform.storage.minio_store import MinioStore

    return MinioStore(
        settings.store_endpoint,
        settings.store_access_key,
        settings.store_secret_key,
        secure=settings.store_secure,
        bucket=settings.store_bucket,
        region=settings.store_region,
    )
