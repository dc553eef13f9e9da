"""The embedded artifact store: one directory per bucket, so the default setup needs nothing running.

Every write goes to a hidden temp file beside its target, is fsynced, then renamed over the target
(os.replace is atomic on POSIX): a reader, or a crash, never sees half an object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from twinray.shared.platform.errors import InvalidInput, NotFound, Unavailable
from twinray.shared.platform.storage.base import ArtifactRef, ArtifactStore, check_key, check_prefix, verify_sha256

TEMP_PREFIX = ".twinray-partial-"
_CHUNK = 1 << 20


def read_chunks(f: BinaryIO) -> Iterator[bytes]:
    return iter(lambda: f.read(_CHUNK), b"")


def write_atomically(target: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Write `chunks` to `target` via a temp file + rename; return (sha256, size). Unavailable on disk errors."""
    digest, size = hashlib.sha256(), 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
    except (FileExistsError, NotADirectoryError):
        raise InvalidInput(f"cannot write {target}: a file is in the way of its directory") from None
    except OSError as exc:
        raise Unavailable(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            for chunk in chunks:
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, IsADirectoryError):
            raise InvalidInput(f"cannot write {target}: it is a directory") from None
        if isinstance(exc, OSError):
            raise Unavailable(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise
    return digest.hexdigest(), size


class LocalStore(ArtifactStore):
    """Objects live at `root/bucket/key`."""

    def __init__(self, root: Path, bucket: str) -> None:
        if "/" in check_key(bucket):
            raise InvalidInput(f"invalid bucket name {bucket!r}")
        self.bucket = bucket
        self.directory = Path(root).expanduser().resolve() / bucket
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create the artifact store at {self.directory}: {exc.strerror or exc}") from exc

    def _path(self, key: str) -> Path:
        if any(part.startswith(TEMP_PREFIX) for part in check_key(key).split("/")):
            raise InvalidInput(f"invalid artifact key {key!r}: {TEMP_PREFIX!r} marks temp files")
        return self.directory / key

    def _write(self, key: str, chunks: Iterable[bytes]) -> ArtifactRef:
        sha256, size = write_atomically(self._path(key), chunks)
        return ArtifactRef(self.bucket, key, sha256, size)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        return self._write(key, [data])

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise InvalidInput(f"cannot read local file {path}: {exc.strerror or exc}") from None
        with f:
            return self._write(key, read_chunks(f))

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no artifact at {self.uri(key)}") from None
        except OSError as exc:
            raise Unavailable(f"cannot read {self.uri(key)}: {exc.strerror or exc}") from exc

    def get_bytes(self, key: str, *, sha256: str = "") -> bytes:
        with self._open(key) as f:
            data = f.read()
        return verify_sha256(data, sha256, self.uri(key))

    def get_file(self, key: str, path: Path) -> Path:
        with self._open(key) as f:
            write_atomically(Path(path), read_chunks(f))
        return Path(path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        start = self.directory / prefix.rpartition("/")[0]
        keys = []
        for folder, _, files in os.walk(start):
            relative = Path(folder).relative_to(self.directory).as_posix()
            for name in files:
                key = name if relative == "." else f"{relative}/{name}"
                if not name.startswith(TEMP_PREFIX) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        except OSError as exc:
            raise Unavailable(f"cannot delete {self.uri(key)}: {exc.strerror or exc}") from exc
        # Drop emptied folders, so a later object may take their name.
        for parent in path.parents:
            if parent == self.directory:
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()
