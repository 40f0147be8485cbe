"""The four-layer payload archive (published only when payload storage is enabled for the key) and the
archiver's request/reply messages for signed payload links."""

from __future__ import annotations

import msgspec


class PayloadArchive(msgspec.Struct, frozen=True):
    """Raw bytes of every view of one request; the archiver encrypts it before it is stored.

    New fields must get defaults so that yesterday's messages still decode.
    """

    request_id: str
    organization_id: str
    timestamp_ms: int
    caller_request: bytes  # the raw body from the application
    upstream_request: bytes  # what was sent to the provider (post-DLP, post-rule), the serving attempt's
    upstream_response: bytes  # the provider's raw answer; for streams the raw event stream
    caller_response: bytes  # what the caller received (after DLP restore and format translation)
    api_key_id: str = ""
    endpoint: str = ""
    stream: bool = False
    status_code: int = 0
    redactions: int = 0
    truncated: bool = False  # a layer was cut to fit the bus's message size limit
    # A sealed box (services/common/sealing.py) of the whole encoded archive, to the archiver's public key,
    # associated data `archive_aad(request_id, organization_id)`; when set, the four layers above are empty
    # and only request_id, organization_id and timestamp_ms travel in clear. Empty: a plaintext archive from a
    # proxy older than sealing (accepted by the archiver for a rolling upgrade).
    sealed: bytes = b""


def archive_aad(request_id: str, organization_id: str) -> bytes:
    """Associated data of a sealed archive: a box moved under another request or organization does not open."""
    return f"routeur-archive\n{request_id}\n{organization_id}".encode()


def fetch_reply_aad(request_id: str) -> bytes:
    """Associated data of a sealed fetch reply."""
    return f"routeur-fetch\n{request_id}".encode()


class PayloadLinkRequest(msgspec.Struct, frozen=True):
    """Proxy → archiver: mint a signed link for one request's archive, if the organization's object exists."""

    request_id: str
    organization_id: str


class PayloadLinkReply(msgspec.Struct, frozen=True):
    """`path` is `/v1/payloads/<request_id>?<signed query>` (the proxy prefixes its public base URL);
    None when no archive exists for that request in that organization."""

    path: str | None = None
    expires_at_ms: int | None = None
    error: str | None = None


class PayloadFetchRequest(msgspec.Struct, frozen=True):
    """Proxy → archiver: the signed link's parts, exactly as the caller sent them (verified by the archiver)."""

    request_id: str
    query: dict[str, str]
    # A fresh X25519 public key (32 raw bytes) per fetch: the archiver seals the reply's body to it. The
    # archiver refuses a fetch without one (a plaintext body would cross the bus).
    reply_key: bytes = b""


class PayloadFetchReply(msgspec.Struct, frozen=True):
    """`status` 200 with `body` (the four-layer JSON, sealed to the request's `reply_key` when `sealed`), or
    400/403/404/503 with an OpenAI-style `error` message (never a reason that would help forge a link beyond
    'invalid or expired')."""

    status: int
    body: bytes = b""
    error: str | None = None
    code: str | None = None
    sealed: bool = False
