"""The artifact store on MinIO or any S3 server, through the `minio` SDK.

S3 makes each PUT (and each completed multipart upload) atomic, so no temp objects are needed here.
The HTTP client has short connect timeouts and few retries: an unreachable store must fail a request
in seconds with a message naming the endpoint, not hang a training job or an RPC for minutes.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from twinray.shared.platform.errors import InvalidInput, NotFound, PermissionDenied, Unavailable
from twinray.shared.platform.storage.base import (
    ArtifactRef,
    ArtifactStore,
    check_key,
    check_prefix,
    sha256_bytes,
    sha256_file,
    verify_sha256,
)
from twinray.shared.platform.storage.local import read_chunks, write_atomically

PART_SIZE = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 30.0
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchVersion"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def parse_endpoint(endpoint: str, secure: bool = False) -> tuple[str, bool]:
    """Accept "host:port" (TLS per `secure`) or "http(s)://host:port" (the scheme decides)."""
    if "://" not in endpoint:
        return endpoint.strip().rstrip("/"), secure
    url = urlsplit(endpoint.strip())
    if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
        raise InvalidInput(f"invalid store endpoint {endpoint!r}: use host:port or http(s)://host:port")
    return url.netloc, url.scheme == "https"


def _network_reason(exc: urllib3.exceptions.HTTPError) -> str:
    """A few words for a network failure; urllib3's own messages embed object reprs."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "its host name does not resolve"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):  # subclass of ConnectTimeoutError
        return str(reason).rpartition("Failed to establish a new connection: ")[2]
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return f"no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return f"no reply within {READ_TIMEOUT_S:g} s"
    return type(reason).__name__


def _http_client() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        # After the last retry of a 5xx, hand the response to the SDK so its S3 error text reaches the message.
        retries=urllib3.Retry(
            total=2, connect=1, read=0, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504], raise_on_status=False
        ),
    )


class MinioStore(ArtifactStore):
    """One bucket on an S3 server; the bucket is created on the first write when missing (so opening a
    store never touches the network: a service starts while the store is down). sha256 goes in
    x-amz-meta-sha256."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        bucket: str = "twinray",
        region: str = "",
    ) -> None:
        host, secure = parse_endpoint(endpoint, secure)
        self.endpoint = f"{'https' if secure else 'http'}://{host}"
        self.bucket = bucket
        try:
            self._client = Minio(
                host,
                access_key=access_key or None,
                secret_key=secret_key or None,
                secure=secure,
                region=region or None,
                http_client=_http_client(),
            )
        except ValueError as exc:
            raise InvalidInput(f"invalid store endpoint {endpoint!r}: {exc}") from None
        self._region = region
        self._bucket_ready = False

    @contextlib.contextmanager
    def _errors(self, key: str = "") -> Iterator[None]:
        """Turn SDK and network errors into the project's errors, each one line naming the endpoint."""
        where = f"{self.endpoint}/{self.bucket}/{key}" if key else f"{self.endpoint}/{self.bucket}"
        try:
            yield
        except S3Error as exc:
            if exc.code in _MISSING:
                raise NotFound(f"no artifact at {where} ({exc.code})") from None
            if exc.code in _DENIED:
                raise PermissionDenied(
                    f"artifact store {self.endpoint} refused access to {where} ({exc.code}): "
                    "check TWINRAY_STORE_ACCESS_KEY / TWINRAY_STORE_SECRET_KEY"
                ) from None
            raise Unavailable(f"artifact store {self.endpoint} failed on {where}: {exc.code} {exc.message}") from None
        except (ServerError, InvalidResponseError) as exc:  # e.g. a proxy, or not an S3 server at all
            raise Unavailable(f"artifact store {self.endpoint} failed on {where}: {str(exc)[:200]}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"artifact store {self.endpoint} is unavailable: {_network_reason(exc)}") from None
        except ValueError as exc:  # the SDK's own argument checks, e.g. bucket names
            raise InvalidInput(f"artifact store request for {where} is invalid: {exc}") from None

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._errors():
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket, location=self._region or None)
                except S3Error as exc:  # another process created it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        sha256 = sha256_bytes(data)
        self._ensure_bucket()
        with self._errors(check_key(key)):
            result = self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type, metadata={"sha256": sha256}
            )
        return ArtifactRef(self.bucket, key, sha256, len(data), result.version_id or "")

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        check_key(key)
        self._ensure_bucket()
        try:
            sha256, size = sha256_file(Path(path)), Path(path).stat().st_size
        except OSError as exc:
            raise InvalidInput(f"cannot read local file {path}: {exc.strerror or exc}") from None
        with self._errors(key):
            result = self._client.fput_object(
                self.bucket, key, str(path), content_type=content_type, metadata={"sha256": sha256}, part_size=PART_SIZE
            )
        return ArtifactRef(self.bucket, key, sha256, size, result.version_id or "")

    def get_bytes(self, key: str, *, sha256: str = "") -> bytes:
        with self._errors(check_key(key)):
            response = self._client.get_object(self.bucket, key)
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
        return verify_sha256(data, sha256, self.uri(key))

    def get_file(self, key: str, path: Path) -> Path:
        with self._errors(check_key(key)):
            response = self._client.get_object(self.bucket, key)
            try:
                write_atomically(Path(path), read_chunks(response))
            finally:
                response.close()
                response.release_conn()
        return Path(path)

    def exists(self, key: str) -> bool:
        try:
            with self._errors(check_key(key)):
                self._client.stat_object(self.bucket, key)
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        try:
            with self._errors(check_prefix(prefix)):
                objects = self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
                return sorted(o.object_name for o in objects if not o.is_dir)
        except NotFound:  # the bucket is created on the first write
            return []

    def delete(self, key: str) -> None:
        try:
            with self._errors(check_key(key)):
                self._client.remove_object(self.bucket, key)
        except NotFound:
            pass

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
