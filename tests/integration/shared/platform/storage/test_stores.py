"""Every backend passes the same contract tests; backend-specific behaviour is tested below them."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
from minio import Minio
from minio.commonconfig import ENABLED
from minio.versioningconfig import VersioningConfig

from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound, PermissionDenied, Unavailable
from twinray.shared.platform.storage import LocalStore, MinioStore, open_store, sha256_bytes, sha256_file
from twinray.shared.platform.storage import local as local_module
from twinray.shared.platform.storage.local import TEMP_PREFIX
from twinray.shared.platform.storage.minio_store import PART_SIZE, parse_endpoint

BAD_KEYS = ["", "/abs", "a//b", "a/../b", "..", "a/./b", "a\\b", "a/", "a\0b"]


def test_bytes_round_trip(store):
    ref = store.put_bytes("models/x/1/config.json", b'{"a": 1}', content_type="application/json")

    assert (ref.bucket, ref.key, ref.size) == (store.bucket, "models/x/1/config.json", 8)
    assert ref.sha256 == sha256_bytes(b'{"a": 1}')
    assert store.get_bytes(ref.key, sha256=ref.sha256) == b'{"a": 1}'
    assert store.exists(ref.key)
    assert store.uri(ref.key).endswith("/models/x/1/config.json")


def test_empty_object(store):
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""


def test_large_file_round_trip(store, tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(PART_SIZE + 123))

    ref = store.put_file("data/big.bin", source)
    target = store.get_file("data/big.bin", tmp_path / "out" / "copy.bin")

    assert ref.sha256 == sha256_file(source) == sha256_file(target)
    assert ref.size == source.stat().st_size
    assert os.listdir(tmp_path / "out") == ["copy.bin"]  # no temp file left beside it


def test_wrong_sha256_raises_integrity_error(store):
    store.put_bytes("k", b"payload")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.get_bytes("k", sha256=sha256_bytes(b"something else"))


def test_missing_key(store, tmp_path):
    with pytest.raises(NotFound, match="missing/key"):
        store.get_bytes("missing/key")
    with pytest.raises(NotFound):
        store.get_file("missing/key", tmp_path / "x")
    assert not store.exists("missing/key")
    assert not (tmp_path / "x").exists()
    store.delete("missing/key")  # no error


def test_a_folder_is_not_an_object(store):
    store.put_bytes("folder/obj", b"x")
    assert not store.exists("folder")
    with pytest.raises(NotFound):
        store.get_bytes("folder")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_rejected(store, key):
    with pytest.raises(InvalidInput, match="invalid artifact key"):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidInput):
        store.get_bytes(key)
    with pytest.raises(InvalidInput):
        store.exists(key)


def test_list_by_prefix(store):
    for key in ["a/1", "a/2/x", "ab/3", "b/4"]:
        store.put_bytes(key, b"x")

    assert store.list() == ["a/1", "a/2/x", "ab/3", "b/4"]
    assert store.list("a/") == ["a/1", "a/2/x"]
    assert store.list("a") == ["a/1", "a/2/x", "ab/3"]
    assert store.list("zzz/") == []
    with pytest.raises(InvalidInput):
        store.list("../")


def test_delete(store):
    store.put_bytes("d/one", b"1")
    store.put_bytes("d/two", b"2")
    store.delete("d/one")
    assert store.list("d/") == ["d/two"]
    assert not store.exists("d/one")


def test_overwrite_is_never_seen_half_done(store):
    """A reader during repeated overwrites sees one whole version or the other."""
    old, new = b"o" * (1 << 20), b"n" * (1 << 20)
    store.put_bytes("obj", old)
    stop, seen = threading.Event(), set()

    def read() -> None:
        while not stop.is_set():
            seen.add(store.get_bytes("obj"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(10):
            store.put_bytes("obj", new if i % 2 == 0 else old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {old, new}
    assert store.get_bytes("obj") == old


# --- local directory ----------------------------------------------------------------------------


def test_local_failed_write_keeps_old_object(tmp_path, monkeypatch):
    store = LocalStore(tmp_path, "bucket")
    store.put_bytes("k/obj", b"old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local_module.os, "replace", no_space)
    with pytest.raises(Unavailable, match="No space left"):
        store.put_bytes("k/obj", b"new")
    monkeypatch.undo()

    assert store.get_bytes("k/obj") == b"old"
    assert os.listdir(tmp_path / "bucket" / "k") == ["obj"]


def test_local_list_skips_temp_files(tmp_path):
    store = LocalStore(tmp_path, "bucket")
    store.put_bytes("k/obj", b"x")
    (tmp_path / "bucket" / "k" / f"{TEMP_PREFIX}crashed").write_bytes(b"half")  # as a crash would leave it

    assert store.list() == ["k/obj"]
    with pytest.raises(InvalidInput):
        store.get_bytes(f"k/{TEMP_PREFIX}crashed")


def test_local_objects_stay_under_root(tmp_path):
    store = LocalStore(tmp_path / "root", "bucket")
    store.put_bytes("a/b/c.txt", b"x")
    assert (tmp_path / "root" / "bucket" / "a" / "b" / "c.txt").read_bytes() == b"x"
    assert store.uri("a/b/c.txt") == (tmp_path / "root" / "bucket" / "a" / "b" / "c.txt").as_uri()


def test_local_delete_frees_the_name(tmp_path):
    """S3 allows 'a' and 'a/b' side by side; on disk, 'a' can become a file once 'a/b' is gone."""
    store = LocalStore(tmp_path, "bucket")
    store.put_bytes("a/b", b"x")
    with pytest.raises(InvalidInput):
        store.put_bytes("a", b"y")
    store.delete("a/b")
    store.put_bytes("a", b"y")
    assert store.list() == ["a"]


# --- S3 (moto, SeaweedFS) -----------------------------------------------------------------------


@pytest.mark.integration
def test_s3_records_sha256_and_uploads_large_files_in_parts(moto_s3, tmp_path):
    store = moto_s3.store()
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(PART_SIZE + 1))
    store.put_file("big.bin", source)
    store.put_bytes("small", b"abc")

    client = Minio(moto_s3.endpoint, moto_s3.access_key, moto_s3.secret_key, secure=False)
    big, small = client.stat_object(store.bucket, "big.bin"), client.stat_object(store.bucket, "small")
    assert big.etag.endswith("-2")  # two parts
    assert big.metadata["x-amz-meta-sha256"] == sha256_file(source)
    assert small.metadata["x-amz-meta-sha256"] == sha256_bytes(b"abc")


@pytest.mark.integration
def test_s3_versioned_bucket_returns_version_ids(moto_s3):
    store = moto_s3.store()
    client = Minio(moto_s3.endpoint, moto_s3.access_key, moto_s3.secret_key, secure=False)
    client.make_bucket(store.bucket)
    client.set_bucket_versioning(store.bucket, VersioningConfig(ENABLED))

    first, second = store.put_bytes("k", b"1"), store.put_bytes("k", b"2")

    assert first.version and second.version and first.version != second.version


@pytest.mark.integration
def test_s3_wrong_secret_is_permission_denied(seaweedfs_s3):
    store = MinioStore(seaweedfs_s3.endpoint, seaweedfs_s3.access_key, "wrong-secret", bucket="denied")
    with pytest.raises(PermissionDenied, match="TWINRAY_STORE_SECRET_KEY"):
        store.put_bytes("k", b"x")


@pytest.mark.integration
def test_s3_reuses_an_existing_bucket(moto_s3):
    first = moto_s3.store()
    first.put_bytes("k", b"x")
    assert moto_s3.store(first.bucket).get_bytes("k") == b"x"


def test_unreachable_endpoint_fails_fast(closed_port):
    port = closed_port
    started = time.monotonic()
    store = open_store(Settings(store_endpoint=f"http://127.0.0.1:{port}", store_access_key="a", store_secret_key="b"))
    with pytest.raises(Unavailable, match=f"127.0.0.1:{port} is unavailable: .*Connection refused"):
        store.get_bytes("any/key")
    assert time.monotonic() - started < 10


# --- choosing a store ---------------------------------------------------------------------------


def test_open_store_without_endpoint_is_local(tmp_path):
    store = open_store(Settings(store_root=tmp_path, store_bucket="bk"))
    assert isinstance(store, LocalStore) and store.directory == tmp_path.resolve() / "bk"


@pytest.mark.integration
@pytest.mark.parametrize("form", ["{}", "http://{}", "http://{}/"])
def test_open_store_endpoint_forms(moto_s3, form):
    store = open_store(Settings(store_endpoint=form.format(moto_s3.endpoint), store_bucket="forms"))
    assert isinstance(store, MinioStore) and store.endpoint == f"http://{moto_s3.endpoint}"


@pytest.mark.parametrize(
    ("endpoint", "secure", "expected"),
    [
        ("h:9000", False, ("h:9000", False)),
        ("h:9000", True, ("h:9000", True)),
        ("https://h:9000", False, ("h:9000", True)),
        ("http://h:9000", True, ("h:9000", False)),
    ],
)
def test_parse_endpoint(endpoint, secure, expected):
    assert parse_endpoint(endpoint, secure) == expected


@pytest.mark.parametrize("endpoint", ["ftp://h:1", "http://h:1/path", "http://"])
def test_parse_endpoint_rejects(endpoint):
    with pytest.raises(InvalidInput):
        parse_endpoint(endpoint)


def test_local_bucket_must_be_one_segment(tmp_path):
    with pytest.raises(InvalidInput):
        LocalStore(tmp_path, "a/b")
