"""The archiver's object store: one async interface over a local directory (FileStore) or S3 (S3Store)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.archiver.errors import ArchiverError, InvalidKey, ObjectNotFound, StoreRejected, StoreUnavailable

T = TypeVar("T")
Keys = list[str]  # spelled once here: inside the classes below, `list` is also a method name
DAY_S = 86_400
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 200  # leaves room under NAME_MAX (255) for FileStore's ".NAME.meta.json" sidecar
MAX_METADATA_BYTES = 2048  # the S3 limit for user metadata
_METADATA_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ObjectStore(Protocol):
    """What the archiver needs from object storage; every backend behaves the same for the same calls."""

    async def put(self, key: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
        """Store `data` under `key`, replacing any object and its metadata."""

    async def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""

    async def head(self, key: str) -> dict[str, str] | None:
        """The object's metadata ({} when it has none), or None when there is no object."""

    async def delete(self, key: str) -> None:
        """Remove the object; removing an absent object is not an error."""

    async def list(self, prefix: str = "") -> Keys:
        """Keys starting with `prefix`, sorted."""

    async def expire(self, older_than_days: int, *, now: float | None = None) -> int:
        """Delete objects last written more than `older_than_days` days before `now`; return how many."""

    async def ensure_bucket(self) -> None:
        """Create the bucket (or directory) if it does not exist yet."""

    async def ping(self) -> bool:
        """True when the bucket (or directory) is reachable."""


def check_key(key: str) -> str:
    """Return `key` when every backend can store it under that exact name, else raise InvalidKey saying why."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKey(f"key {key!r} is not valid UTF-8") from exc
    if not key or size > MAX_KEY_BYTES:
        raise InvalidKey(f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size}")
    if "\\" in key or _CONTROL.search(key):
        raise InvalidKey(f"key {key!r} contains a backslash, NUL or control character; use '/' to separate")
    if key.startswith("/"):
        raise InvalidKey(f"key {key!r} is absolute; keys are relative, like 'tenant/2025/01/id.json'")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise InvalidKey(f"key {key!r} has an empty segment or one starting with '.' (such as '..')")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKey(f"key {key!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes")
    return key


def _clean_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Lower-case keys (S3 does) and reject what HTTP headers cannot carry, so backends agree."""
    clean = {name.lower(): value for name, value in (metadata or {}).items()}
    for name, value in clean.items():
        if not _METADATA_KEY.fullmatch(name):
            raise ValueError(f"metadata name {name!r} must be letters, digits and '-'")
        if not value.isascii() or _CONTROL.search(value):
            raise ValueError(f"metadata {name!r} must be printable ASCII")
    if sum(len(n) + len(v) for n, v in clean.items()) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return clean


def _cutoff(older_than_days: int, now: float | None) -> float:
    if older_than_days < 0:
        raise ValueError("older_than_days must be >= 0")
    return (time.time() if now is None else now) - older_than_days * DAY_S


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileStore:
    """Objects as files under `root` (key 'a/b' is root/a/b); metadata in a hidden '.b.meta.json' sidecar."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r})"

    async def put(self, key: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
        path, meta = self._path(key), _clean_metadata(metadata)
        await asyncio.to_thread(self._put, path, data, meta)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r}") from exc

    async def head(self, key: str) -> dict[str, str] | None:
        return await asyncio.to_thread(self._head, self._path(key))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, self._path(key))

    async def list(self, prefix: str = "") -> Keys:
        return await asyncio.to_thread(self._list, prefix)

    async def expire(self, older_than_days: int, *, now: float | None = None) -> int:
        return await asyncio.to_thread(self._expire, _cutoff(older_than_days, now))

    async def ensure_bucket(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)

    async def ping(self) -> bool:
        return await asyncio.to_thread(lambda: self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def _put(self, path: Path, data: bytes, metadata: dict[str, str]) -> None:
        for attempt in range(3):  # a concurrent delete may prune the parent directory between mkdir and write
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if metadata:
                    _write_atomic(self._meta_path(path), json.dumps(metadata).encode())
                else:
                    self._meta_path(path).unlink(missing_ok=True)
                _write_atomic(path, data)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
                key = path.relative_to(self.root).as_posix()
                raise InvalidKey(f"key {key!r} clashes with a key that uses it as a prefix, or the reverse") from exc

    def _head(self, path: Path) -> dict[str, str] | None:
        if not path.is_file():
            return None
        try:
            return dict(json.loads(self._meta_path(path).read_text()))
        except FileNotFoundError:
            return {}

    def _delete(self, path: Path) -> None:
        for target in (path, self._meta_path(path)):
            with suppress(FileNotFoundError, NotADirectoryError):
                target.unlink()
        parent = path.parent
        while parent != self.root:  # prune emptied directories so 'a' can be a key again after 'a/b' is gone
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def _list(self, prefix: str) -> Keys:
        folder = self.root
        if "/" in prefix:
            try:
                folder = self._path(prefix.rpartition("/")[0])
            except InvalidKey:
                return []  # no valid key can start with this prefix
        keys: Keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _expire(self, cutoff: float) -> int:
        count = 0
        for key in self._list(""):
            path = self._path(key)
            with suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    self._delete(path)
                    count += 1
        return count


def _translate(exc: BotoCoreError | ClientError, what: str) -> ArchiverError:
    """Map a boto3 error to the archiver's tree; messages carry S3 codes and URLs, never credentials."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code in ("NoSuchKey", "404"):
            return ObjectNotFound(f"{what}: no such object")
        if status >= 500:
            return StoreUnavailable(f"{what}: store failed with HTTP {status} {code}")
        return StoreRejected(f"{what}: {code} (HTTP {status})", reason=code)
    return StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}")


class S3Store:
    """Objects in one S3 bucket (AWS, Ceph radosgw, ...), SigV4 and path-style addressing."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        timeout_s: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        """Empty `endpoint_url`/keys fall back to boto3's defaults (AWS endpoint, credential chain)."""
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    async def put(self, key: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
        meta = _clean_metadata(metadata)
        await self._call(
            f"put {key!r}", self._client.put_object, Bucket=self.bucket, Key=check_key(key), Body=data, Metadata=meta
        )

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            return bytes(self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

        check_key(key)
        return await self._call(f"get {key!r}", read)

    async def head(self, key: str) -> dict[str, str] | None:
        check_key(key)
        try:
            reply = await self._call(f"head {key!r}", self._client.head_object, Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return dict(reply.get("Metadata", {}))

    async def delete(self, key: str) -> None:
        await self._call(f"delete {key!r}", self._client.delete_object, Bucket=self.bucket, Key=check_key(key))

    async def list(self, prefix: str = "") -> Keys:
        def keys() -> Keys:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

        return await self._call(f"list {prefix!r}", keys)

    async def expire(self, older_than_days: int, *, now: float | None = None) -> int:
        cutoff = _cutoff(older_than_days, now)

        def sweep() -> int:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            old = [
                o["Key"] for page in pages for o in page.get("Contents", []) if o["LastModified"].timestamp() < cutoff
            ]
            for start in range(0, len(old), 1000):
                batch = [{"Key": key} for key in old[start : start + 1000]]
                reply = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if errors := reply.get("Errors"):
                    raise StoreRejected(f"expire: {len(errors)} deletes refused", reason=errors[0].get("Code", ""))
            return len(old)

        return await self._call("expire", sweep)

    async def set_lifecycle(self, days: int) -> None:
        """Have the store itself expire every object `days` days after it was written (bucket lifecycle rule)."""
        rule = {"ID": "expire-all", "Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": days}}
        await self._call(
            "set lifecycle",
            self._client.put_bucket_lifecycle_configuration,
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": [rule]},
        )

    async def ensure_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await self._call(f"create bucket {self.bucket!r}", self._client.create_bucket, **kwargs)
        except StoreRejected as exc:
            if exc.reason != "BucketAlreadyOwnedByYou":
                raise

    async def ping(self) -> bool:
        try:
            await self._call("ping", self._client.head_bucket, Bucket=self.bucket)
        except ArchiverError:
            return False
        return True

    def presign_get(self, key: str, expires_s: int) -> str:
        """A SigV4 URL that lets anyone GET the object for `expires_s` seconds (computed locally, no I/O)."""
        params = {"Bucket": self.bucket, "Key": check_key(key)}
        return str(self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))

    @staticmethod
    async def _call(what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise _translate(exc, what) from exc


def open_store(
    url: str, *, access_key: str = "", secret_key: str = "", endpoint_url: str = "", region: str = "us-east-1"
) -> ObjectStore:
    """`file:///abs/path` or `file://./rel/path` → FileStore; `s3://bucket` → S3Store. Raises ValueError."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError("object store URL must not embed credentials; pass access_key/secret_key instead")
    if parts.scheme == "file":
        if parts.netloc in ("", "localhost") and parts.path:
            return FileStore(Path(parts.path))
        if parts.netloc in (".", ".."):
            return FileStore(Path(parts.netloc + parts.path))
    elif parts.scheme == "s3" and parts.netloc and parts.path in ("", "/") and not parts.query:
        return S3Store(
            parts.netloc, endpoint_url=endpoint_url, access_key=access_key, secret_key=secret_key, region=region
        )
    raise ValueError(f"unsupported object store URL {url!r}: use file:///abs/path, file://./rel/path or s3://bucket")
