"""The artifact-store interface every backend implements (local directory, MinIO/S3).

Keys are '/'-separated relative paths such as "models/segmentation/3/weights.pt". Every write is
atomic: a reader sees either the old object or the whole new one, never a partial object.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from pathlib import Path

from twinray.shared.platform.errors import IntegrityError, InvalidInput


@dataclasses.dataclass(frozen=True)
class ArtifactRef:
    """Where an object lives, and what its bytes hash to."""

    bucket: str
    key: str
    sha256: str
    size: int
    version: str = ""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_key(key: str) -> str:
    """Reject keys that could escape the bucket on disk or mean different objects on different backends."""
    bad_part = any(part in ("", ".", "..") for part in key.split("/"))
    if not key or key.startswith("/") or "\\" in key or "\0" in key or bad_part:
        raise InvalidInput(f"invalid artifact key {key!r}: use a relative 'a/b/c' path without '', '.' or '..' parts")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix is a key, possibly empty or ending with '/'."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def verify_sha256(data: bytes, expected: str, where: str) -> bytes:
    """Return `data` when it hashes to `expected` (or nothing is expected); IntegrityError otherwise."""
    if expected and sha256_bytes(data) != expected:
        raise IntegrityError(f"{where} is corrupt: sha256 {sha256_bytes(data)} != expected {expected}")
    return data


class ArtifactStore(abc.ABC):
    """One bucket of objects. Raises twinray.shared.platform.errors NotFound / Unavailable / PermissionDenied / IntegrityError /
    InvalidInput, never a backend's own exception."""

    bucket: str

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        """Store `data` at `key` atomically (replacing any object there)."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        """Store a local file at `key` atomically; large files go up in parts."""

    @abc.abstractmethod
    def get_bytes(self, key: str, *, sha256: str = "") -> bytes:
        """Read the object at `key`; when `sha256` is given, verify it (IntegrityError on mismatch)."""

    @abc.abstractmethod
    def get_file(self, key: str, path: Path) -> Path:
        """Download the object at `key` to `path` (written then renamed) and return `path`."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether a whole object exists at `key`."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All keys starting with `prefix`, sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at `key` (no error when it is absent)."""

    @abc.abstractmethod
    def uri(self, key: str) -> str:
        """A human-readable location, e.g. file:///... or s3://bucket/key."""
