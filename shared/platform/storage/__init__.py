"""Artifact stores: a local directory by default, MinIO/S3 when an endpoint is configured."""

from __future__ import annotations

from twinray.shared.platform.config import Settings
from twinray.shared.platform.storage.base import ArtifactRef, ArtifactStore, sha256_bytes, sha256_file
from twinray.shared.platform.storage.local import LocalStore
from twinray.shared.platform.storage.minio_store import MinioStore

__all__ = ["ArtifactRef", "ArtifactStore", "LocalStore", "MinioStore", "open_store", "sha256_bytes", "sha256_file"]


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: `store_endpoint` empty -> `store_root` on disk, else that S3 server."""
    if not settings.store_endpoint:
        return LocalStore(settings.store_root, settings.store_bucket)
    return MinioStore(
        settings.store_endpoint,
        settings.store_access_key,
        settings.store_secret_key,
        secure=settings.store_secure,
        bucket=settings.store_bucket,
        region=settings.store_region,
    )
