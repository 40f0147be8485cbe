"""The archiver's error tree; every error carries a stable `code` for logs and error replies.

ArchiverError                 archiver_error
├── InvalidKey                invalid_key         key unusable as an object name (both backends)
├── ObjectNotFound            object_not_found    no object under that key
├── StoreRejected             store_rejected      the store refused the request (`reason`: S3 code)
└── StoreUnavailable          store_unavailable   the store cannot be reached or failed (5xx)
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base of every archiver error."""

    code = "archiver_error"


class InvalidKey(ArchiverError):
    """The key is empty, absolute, has `..`/`.`-prefixed or empty segments, a NUL or a backslash."""

    code = "invalid_key"


class ObjectNotFound(ArchiverError):
    """No object is stored under the key."""

    code = "object_not_found"


class StoreRejected(ArchiverError):
    """The store answered with an error (bad credentials, denied, ...); `reason` is its error code."""

    code = "store_rejected"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class StoreUnavailable(ArchiverError):
    """The store cannot be reached, timed out, or failed on its side; retrying later may succeed."""

    code = "store_unavailable"
