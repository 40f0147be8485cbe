"""Where an archive lives and what it holds (pure): object keys, stored encoding, the fetch JSON body.

An archive of request R in organization O is stored under `O/yyyy/mm/dd/R`, the date (UTC) being the one
inside R's ULID, so the object is found again from (O, R) alone — which is all a signed link carries.
The plaintext sealed into the object is the msgpack encoding of proto.payload.PayloadArchive (raw bytes,
no base64 inflation); METADATA_ENCODING names it in the object's metadata.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

import msgspec

from proto.payload import PayloadArchive
from services.archiver.errors import InvalidKey
from services.archiver.store import check_key
from services.common.ids import is_ulid, ulid_time_ms

ENCODING = "msgpack"
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(PayloadArchive)
_json = msgspec.json.Encoder()
LAYERS = ("caller_request", "upstream_request", "upstream_response", "caller_response")


def check_org(org: str) -> str:
    """`org` when it is usable as a key segment and a link parameter, else InvalidKey."""
    if not _ORG.fullmatch(org):
        raise InvalidKey("organization id must be 1-128 of A-Z a-z 0-9 _ - starting with a letter or digit")
    return org


def check_request_id(request_id: str) -> str:
    """`request_id` when it is a ULID (the archive's date comes from it), else InvalidKey."""
    if not is_ulid(request_id):
        raise InvalidKey("request id must be a ULID (26 Crockford base32 characters)")
    return request_id


def object_key(org: str, request_id: str) -> str:
    """`<org>/<yyyy>/<mm>/<dd>/<request_id>`, dated by the ULID's timestamp (UTC); InvalidKey otherwise."""
    try:
        day = datetime.fromtimestamp(ulid_time_ms(check_request_id(request_id)) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):  # ULIDs reach year 10889, datetime stops at 9999
        raise InvalidKey("request id's timestamp is not a date") from None
    return check_key(f"{check_org(org)}/{day:%Y/%m/%d}/{request_id}")


def metadata(archive: PayloadArchive, *, kid: str) -> dict[str, str]:
    """Object metadata: enough to know how to open it, nothing from the payload itself."""
    return {"kid": kid, "encoding": ENCODING, "organization-id": archive.organization_id,
            "request-id": archive.request_id}


def encode_archive(archive: PayloadArchive) -> bytes:
    """The plaintext that gets sealed."""
    return _encoder.encode(archive)


def decode_archive(plaintext: bytes) -> PayloadArchive:
    """Inverse of encode_archive; msgspec.DecodeError on bytes it did not make."""
    return _decoder.decode(plaintext)


def _layer(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def fetch_body(archive: PayloadArchive) -> bytes:
    """The JSON a payload link returns: the archive's fields and its four layers as text (or base64)."""
    return _json.encode({
        "request_id": archive.request_id,
        "organization_id": archive.organization_id,
        "api_key_id": archive.api_key_id,
        "timestamp_ms": archive.timestamp_ms,
        "endpoint": archive.endpoint,
        "stream": archive.stream,
        "status_code": archive.status_code,
        "redactions": archive.redactions,
        "truncated": archive.truncated,
        "layers": {name: _layer(getattr(archive, name)) for name in LAYERS},
    })
