"""The four-layer payload archive, published only when payload storage is enabled for the key."""

from __future__ import annotations

import msgspec


class PayloadArchive(msgspec.Struct, frozen=True):
    """Raw bytes of every view of one request; the archiver encrypts it before it is stored."""

    request_id: str
    organization_id: str
    timestamp_ms: int
    caller_request: bytes
    upstream_request: bytes
    upstream_response: bytes
    caller_response: bytes
