"""What arrives on the bus, opened (pure): sealed archives from the proxies, and fetch replies sealed back.

An archive message is a PayloadArchive whose `sealed` box (to the archiver's X25519 key) holds the whole
encoded archive; only the request id, organization and time travel in clear. A message without a box is a
plaintext archive from a proxy older than sealing: it is still accepted so that a rolling upgrade loses
nothing (`legacy` says so, for the metric and the log line).
"""

from __future__ import annotations

import msgspec

from proto import codec
from proto.payload import PayloadArchive, archive_aad, fetch_reply_aad
from services.common import sealing
from services.common.sealing import PublicSealKey, SealingError, SealKeyRing

REPLY_KID = sealing.ONE_TIME_KID  # the proxy's per-fetch key


class ForeignArchive(SealingError):
    """The sealed archive names another request or organization than the message around it."""

    code = "foreign_archive"


class Opened(msgspec.Struct, frozen=True):
    archive: PayloadArchive
    legacy: bool  # a plaintext message from a proxy older than sealing


def open_message(data: bytes, keys: SealKeyRing) -> Opened:
    """The archive a bus message carries, opened when sealed.

    Raises msgspec.DecodeError/ValidationError (not an archive), sealing.MalformedSealed / SealAuthFailed /
    ForeignArchive (never opens: drop it), sealing.UnknownSealKey (sealed to a key this archiver lacks: keep
    it until a replica that holds the key takes it).
    """
    outer = codec.decode(data, PayloadArchive)
    if not outer.sealed:
        return Opened(outer, legacy=True)
    plaintext = sealing.open_sealed(outer.sealed, archive_aad(outer.request_id, outer.organization_id), keys)
    inner = codec.decode(plaintext, PayloadArchive)
    if inner.sealed or (inner.request_id, inner.organization_id) != (outer.request_id, outer.organization_id):
        raise ForeignArchive("sealed archive does not belong to the message carrying it")
    return Opened(inner, legacy=False)


def seal_fetch_body(body: bytes, request_id: str, reply_key: bytes) -> bytes:
    """A fetch reply's body sealed to the requesting proxy's one-time key (InvalidSealKey when it is not one)."""
    return sealing.seal(body, fetch_reply_aad(request_id), PublicSealKey(REPLY_KID, reply_key))
