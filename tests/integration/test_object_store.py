"""One contract suite for services/archiver/store.py, run on FileStore and on S3Store against a real radosgw."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.ceph import S3Endpoint
from services.archiver.errors import InvalidKey, ObjectNotFound, StoreRejected, StoreUnavailable
from services.archiver.store import DAY_S, FileStore, ObjectStore, S3Store, open_store
from tests.fixtures.ceph import s3_client

INVALID_KEYS = ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", ".hidden", "a\\b", "nul\x00", "x" * 201]


def make_s3_store(endpoint: S3Endpoint, bucket: str, *, secret_key: str | None = None) -> S3Store:
    return S3Store(
        bucket,
        endpoint_url=endpoint.url,
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key if secret_key is None else secret_key,
        region=endpoint.region,
    )


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store of each backend; the S3 one only starts Ceph when an s3 test runs."""
    if request.param == "file":
        return FileStore(tmp_path / "objects")
    return make_s3_store(request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket"))


@pytest.fixture(params=["file", "s3"])
def absent_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """A store whose bucket (or directory) does not exist yet."""
    if request.param == "file":
        yield FileStore(tmp_path / "not-yet")
        return
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"absent-{uuid.uuid4().hex[:16]}"
    yield make_s3_store(endpoint, bucket)
    s3_client(endpoint).delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_store(s3_endpoint: S3Endpoint, s3_bucket: str) -> S3Store:
    return make_s3_store(s3_endpoint, s3_bucket)


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body of a plain, unauthenticated GET (blocking: call through asyncio.to_thread)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - test URLs point at the local radosgw
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --- the contract, for every backend -------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [0, 1, 6 * 1024 * 1024 + 3])
async def test_put_get_round_trips_binary_data(store: ObjectStore, size: int) -> None:
    data = bytes(range(256)) + os.urandom(size)
    data = data[:size]
    await store.put(f"blobs/{size}.bin", data)
    assert await store.get(f"blobs/{size}.bin") == data


@pytest.mark.asyncio
async def test_overwrite_is_idempotent_and_replaces_metadata(store: ObjectStore) -> None:
    await store.put("t/k", b"v1", metadata={"attempt": "1"})
    await store.put("t/k", b"v1", metadata={"attempt": "1"})
    assert (await store.get("t/k"), await store.head("t/k")) == (b"v1", {"attempt": "1"})
    await store.put("t/k", b"v2")
    assert (await store.get("t/k"), await store.head("t/k")) == (b"v2", {})
    assert await store.list() == ["t/k"]


@pytest.mark.asyncio
async def test_head_returns_lower_cased_metadata_or_none(store: ObjectStore) -> None:
    assert await store.head("t/missing") is None
    await store.put("t/k", b"x", metadata={"Tenant": "acme", "content-sha256": "ab12"})
    assert await store.head("t/k") == {"tenant": "acme", "content-sha256": "ab12"}


@pytest.mark.asyncio
async def test_bad_metadata_is_refused_before_any_io(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        await store.put("t/k", b"x", metadata={"name": "café"})
    assert await store.head("t/k") is None


@pytest.mark.asyncio
async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.delete("t/never-written")
    await store.put("t/k", b"x", metadata={"a": "b"})
    await store.delete("t/k")
    await store.delete("t/k")
    assert await store.head("t/k") is None
    assert await store.list() == []


@pytest.mark.asyncio
async def test_list_by_prefix_is_sorted(store: ObjectStore) -> None:
    keys = ["t1/2025/02/b", "t10/y", "t1/2025/01/c", "t2/x", "t1/2025/01/a", "top"]
    for key in keys:
        await store.put(key, key.encode())
    assert await store.list() == sorted(keys)
    assert await store.list("t1/") == ["t1/2025/01/a", "t1/2025/01/c", "t1/2025/02/b"]
    assert await store.list("t1/2025/01/") == ["t1/2025/01/a", "t1/2025/01/c"]
    assert await store.list("t1/2025/0") == ["t1/2025/01/a", "t1/2025/01/c", "t1/2025/02/b"]
    assert await store.list("t1") == ["t1/2025/01/a", "t1/2025/01/c", "t1/2025/02/b", "t10/y"]
    assert await store.list("nope/") == []
    assert await store.list("../") == []


@pytest.mark.asyncio
async def test_get_missing_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="no such object|no object") as caught:
        await store.get("t/missing")
    assert caught.value.code == "object_not_found"


@pytest.mark.asyncio
@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_are_rejected_by_every_backend(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    assert await store.list() == []


@pytest.mark.asyncio
async def test_expire_deletes_only_objects_older_than_the_cutoff(store: ObjectStore) -> None:
    await store.put("t/old", b"o")
    await asyncio.sleep(1.1)  # S3 LastModified may have one-second resolution
    mark = time.time()
    await asyncio.sleep(1.1)
    await store.put("t/new", b"n")
    assert await store.expire(2, now=mark + 2 * DAY_S) == 1
    assert await store.list() == ["t/new"]
    assert await store.expire(1) == 0
    assert await store.expire(0) == 1
    assert await store.list() == []
    with pytest.raises(ValueError, match=">= 0"):
        await store.expire(-1)


@pytest.mark.asyncio
async def test_ensure_bucket_is_idempotent_and_ping_reports_it(absent_store: ObjectStore) -> None:
    assert await absent_store.ping() is False
    await absent_store.ensure_bucket()
    await absent_store.ensure_bucket()
    assert await absent_store.ping() is True
    assert await absent_store.list() == []


# --- FileStore only -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_file_expire_uses_mtime(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.put("t/old", b"o")
    await store.put("t/new", b"n")
    three_days_ago = time.time() - 3 * DAY_S
    os.utime(tmp_path / "t" / "old", (three_days_ago, three_days_ago))
    assert await store.expire(2) == 1
    assert await store.list() == ["t/new"]


@pytest.mark.asyncio
async def test_file_layout_keeps_sidecars_hidden_and_no_temp_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.put("a/b.json", b"{}", metadata={"k": "v"})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".b.json.meta.json", "b.json"]
    await store.put("a/b.json", b"[]")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]
    assert await store.list() == ["a/b.json"]


@pytest.mark.asyncio
async def test_file_key_that_clashes_with_a_prefix_is_invalid_until_freed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    await store.put("a/b", b"x")
    with pytest.raises(InvalidKey, match="prefix"):
        await store.put("a", b"y")
    await store.delete("a/b")
    await store.put("a", b"y")
    assert await store.list() == ["a"]


@pytest.mark.asyncio
async def test_file_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "root")
    for key in ("../escaped", "/escaped", "a/../../escaped"):
        with pytest.raises(InvalidKey):
            await store.put(key, b"x")
    assert list(tmp_path.rglob("escaped")) == []


def test_open_store_parses_urls(tmp_path: Path) -> None:
    absolute = open_store(f"file://{tmp_path}")
    relative = open_store("file://./var/objects")
    s3 = open_store("s3://archive", endpoint_url="http://127.0.0.1:1", access_key="k", secret_key="s")  # noqa: S106 - dummy, no request is made
    assert isinstance(absolute, FileStore) and absolute.root == tmp_path
    assert isinstance(relative, FileStore) and relative.root == Path("var/objects")
    assert isinstance(s3, S3Store) and s3.bucket == "archive"


@pytest.mark.parametrize("url", ["http://x/y", "s3://bucket/prefix", "s3://", "file://host/x", "file://", "bucket"])
def test_open_store_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported object store URL"):
        open_store(url)


def test_open_store_never_echoes_credentials_in_a_url() -> None:
    with pytest.raises(ValueError, match="must not embed credentials") as caught:
        open_store("s3://AKID:topsecret@bucket")
    assert "topsecret" not in str(caught.value)


# --- S3Store only, against radosgw --------------------------------------------------------------


@pytest.mark.asyncio
async def test_presigned_get_works_with_plain_urllib(s3_store: S3Store) -> None:
    await s3_store.put("t/report.json", b'{"ok": true}')
    url = s3_store.presign_get("t/report.json", expires_s=60)
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert await asyncio.to_thread(http_get, url) == (200, b'{"ok": true}')


@pytest.mark.asyncio
async def test_presigned_url_with_one_changed_signature_character_is_refused(s3_store: S3Store) -> None:
    await s3_store.put("t/k", b"x")
    url = s3_store.presign_get("t/k", expires_s=60)
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    status, body = await asyncio.to_thread(http_get, tampered)
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True)


@pytest.mark.asyncio
async def test_presigned_url_is_refused_once_expired(s3_store: S3Store) -> None:
    await s3_store.put("t/k", b"x")
    url = s3_store.presign_get("t/k", expires_s=1)
    await asyncio.sleep(2)
    status, _ = await asyncio.to_thread(http_get, url)
    assert status == 403


@pytest.mark.asyncio
async def test_unsigned_get_of_a_private_object_is_refused(s3_store: S3Store, s3_endpoint: S3Endpoint) -> None:
    await s3_store.put("t/k", b"x")
    status, body = await asyncio.to_thread(http_get, f"{s3_endpoint.url}/{s3_store.bucket}/t/k")
    assert (status, b"AccessDenied" in body) == (403, True)


@pytest.mark.asyncio
async def test_wrong_secret_key_is_rejected_with_signature_mismatch(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    wrong = make_s3_store(s3_endpoint, s3_bucket, secret_key="x" * 40)
    with pytest.raises(StoreRejected, match="SignatureDoesNotMatch") as caught:
        await wrong.put("t/k", b"x")
    assert (caught.value.reason, caught.value.code) == ("SignatureDoesNotMatch", "store_rejected")
    assert await wrong.ping() is False


@pytest.mark.asyncio
async def test_unreachable_endpoint_raises_store_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = S3Store("b", endpoint_url=f"http://127.0.0.1:{port}", access_key="k", secret_key="s", max_attempts=1)  # noqa: S106 - dummy, nothing listens
    with pytest.raises(StoreUnavailable, match="EndpointConnectionError"):
        await dead.get("t/k")
    assert await dead.ping() is False


@pytest.mark.asyncio
async def test_set_lifecycle_rule_reads_back(s3_store: S3Store, s3_endpoint: S3Endpoint) -> None:
    await s3_store.set_lifecycle(days=30)
    rules = s3_client(s3_endpoint).get_bucket_lifecycle_configuration(Bucket=s3_store.bucket)["Rules"]
    assert [(r["Status"], r["Expiration"]["Days"]) for r in rules] == [("Enabled", 30)]


def test_reprs_never_show_the_secret_key(s3_endpoint: S3Endpoint, s3_store: S3Store) -> None:
    assert s3_endpoint.secret_key not in repr(s3_endpoint)
    assert s3_endpoint.secret_key not in repr(s3_store)
