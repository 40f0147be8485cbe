"""What the archiver's master keys and the payload seal keys share: the key-id pattern of their settings text
(`kid:base64[,kid:base64…]`), its lenient base64, and an ordered ring of keys by id (the first is active, every
key opens what was sealed under it). Each user subclasses the ring with its own error and wording."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


class _Keyed(Protocol):
    @property
    def kid(self) -> str: ...


K = TypeVar("K", bound=_Keyed)


def decode_base64(text: str) -> bytes | None:
    """Standard or URL-safe base64, padding optional; None when it is not base64 at all."""
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


class KeyRing(Generic[K]):
    """Keys in the order configured: `active` is the first, `find` any by id."""

    __slots__ = ("_keys", "_by_kid")
    error: ClassVar[type[Exception]] = ValueError
    empty: ClassVar[str] = "a key ring needs at least one key"
    duplicate: ClassVar[str] = "key ids must be unique"

    def __init__(self, keys: Sequence[K]) -> None:
        if not keys:
            raise self.error(self.empty)
        by_kid = {key.kid: key for key in keys}
        if len(by_kid) != len(keys):
            raise self.error(self.duplicate)
        self._keys = tuple(keys)
        self._by_kid = by_kid

    @property
    def active(self) -> K:
        return self._keys[0]

    @property
    def keys(self) -> tuple[K, ...]:
        return self._keys

    def find(self, kid: str) -> K | None:
        return self._by_kid.get(kid)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kids={tuple(self._by_kid)!r})"

    __str__ = __repr__
