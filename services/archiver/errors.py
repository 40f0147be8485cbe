"""The archiver's error tree; every error carries a stable `code` for logs and error replies.

ArchiverError                 archiver_error
├── InvalidKey                invalid_key         key unusable as an object name (both backends), bad org/request id
├── ObjectNotFound            object_not_found    no object under that key
├── StoreRejected             store_rejected      the store refused the request (`reason`: S3 code)
├── StoreUnavailable          store_unavailable   the store cannot be reached or failed (5xx)
├── InvalidMasterKey          invalid_master_key  ROUTEUR_MASTER_KEY is malformed (never echoes key material)
├── EnvelopeError             envelope_error      a sealed object cannot be opened
│   ├── MalformedEnvelope     malformed_envelope  not a payload envelope: wrong magic, unknown version, truncated
│   ├── UnknownKeyId          unknown_key_id      sealed under a master key id absent from ROUTEUR_MASTER_KEY
│   └── TamperedEnvelope      tampered_envelope   authentication failed: bytes changed, or another request id
└── InvalidLink               invalid_payload_link  a signed payload link that does not verify (`reason` is internal)

Fetch replies (proto.payload.PayloadFetchReply) carry one of the FETCH_* codes below.
"""

from __future__ import annotations

FETCH_INVALID_REQUEST = "invalid_request"
FETCH_INVALID_LINK = "invalid_payload_link"
FETCH_NOT_FOUND = "payload_not_found"
FETCH_STORE_UNAVAILABLE = "payload_store_unavailable"
FETCH_UNREADABLE = "payload_unreadable"
FETCH_TOO_LARGE = "payload_too_large"


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


class InvalidMasterKey(ArchiverError, ValueError):
    """The master key list is malformed; the message names the variable and the entry, never the key bytes."""

    code = "invalid_master_key"


class EnvelopeError(ArchiverError):
    """A sealed object cannot be opened."""

    code = "envelope_error"


class MalformedEnvelope(EnvelopeError):
    """The bytes are not a payload envelope this archiver understands (magic, version or length)."""

    code = "malformed_envelope"


class UnknownKeyId(EnvelopeError):
    """The object was sealed under a master key id that ROUTEUR_MASTER_KEY no longer lists: add it back
    (after the active one) to read objects written before a rotation."""

    code = "unknown_key_id"

    def __init__(self, message: str, *, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


class TamperedEnvelope(EnvelopeError):
    """Authentication failed: the object's bytes were changed, or it is opened for another request id."""

    code = "tampered_envelope"


class InvalidLink(ArchiverError):
    """A payload link that does not verify. `reason` (missing, malformed, expired, bad_signature, foreign) is
    for logs and metrics only: callers only ever learn 'invalid or expired'."""

    code = "invalid_payload_link"

    def __init__(self, reason: str) -> None:
        super().__init__(f"payload link is invalid ({reason})")
        self.reason = reason
