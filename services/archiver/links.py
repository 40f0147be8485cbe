"""Signed payload links (pure): minted by the archiver, verified by the archiver, opaque to everyone else.

    /v1/payloads/<request_id>?org=<org>&expires=<unix seconds>&sig=<base64url HMAC-SHA256, no padding>

The signature covers the link format version, the organization, the request id and the expiry:
HMAC-SHA256(link key, "routeur-payload-link" NUL "v1" NUL org NUL request_id NUL expires). Org and
request id are validated first (no NUL can appear), so the message is unambiguous.

Link key. By default it is derived with HKDF-SHA256 (info "routeur payload link v1") from the active
master key in ROUTEUR_MASTER_KEY: one secret less to provision, and HKDF's distinct label keeps the
derived key independent of the key-wrapping use. Links are verified against the key derived from every
listed master key, so a rotation does not break links minted just before it (they expire within the
TTL anyway). When ROUTEUR_PAYLOAD_LINK_KEY is set, the link key is derived (same HKDF) from it alone:
use that to rotate link signing independently of the data keys, or to let something verify links
without being able to decrypt payloads.

Verification compares the base64url text of the signature in constant time (comparing text, not decoded
bytes, so a changed character that only flips base64's unused trailing bits still fails).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import urlencode

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.archiver.envelope import KeyRing
from services.archiver.errors import InvalidKey, InvalidLink
from services.archiver.objects import object_key

VERSION = "v1"
PATH_PREFIX = "/v1/payloads/"
_INFO = b"routeur payload link v1"
_DOMAIN = b"routeur-payload-link"
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")  # canonical: the signed text is str(int)


class LinkKeys:
    """The key new links are signed with and every key a link may verify under; never printed."""

    __slots__ = ("_signing", "_verifying")

    def __init__(self, signing: bytes, verifying: tuple[bytes, ...]) -> None:
        self._signing = signing
        self._verifying = verifying

    def sign(self, message: bytes) -> str:
        return _b64(hmac.new(self._signing, message, hashlib.sha256).digest())

    def matches(self, message: bytes, signature: str) -> bool:
        given = signature.encode("utf-8", "replace")
        found = False
        for key in self._verifying:  # every key is tried, so timing does not tell which one matched
            expected = _b64(hmac.new(key, message, hashlib.sha256).digest()).encode("ascii")
            found |= hmac.compare_digest(expected, given)
        return found

    def __repr__(self) -> str:
        return f"LinkKeys(<{len(self._verifying)} verifying>)"


class Claims(msgspec.Struct, frozen=True):
    """What a verified link grants: read the archive of `request_id` in `organization_id` until `expires`."""

    organization_id: str
    request_id: str
    expires: int


class Link(msgspec.Struct, frozen=True):
    path: str
    expires: int


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _derive(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


def derive_link_keys(master_keys: KeyRing, link_secret: str = "") -> LinkKeys:
    """Link keys from ROUTEUR_PAYLOAD_LINK_KEY when given, else from the master keys (active signs)."""
    if link_secret:
        key = _derive(link_secret.encode("utf-8"))
        return LinkKeys(key, (key,))
    derived = tuple(_derive(master.reveal()) for master in master_keys.keys)
    return LinkKeys(derived[0], derived)


def _message(org: str, request_id: str, expires: int) -> bytes:
    return b"\x00".join((_DOMAIN, VERSION.encode(), org.encode(), request_id.encode(), str(expires).encode()))


def mint(org: str, request_id: str, *, keys: LinkKeys, ttl_s: int, now_s: float) -> Link:
    """A link to (org, request_id) valid for `ttl_s` seconds from `now_s`; InvalidKey for malformed ids."""
    object_key(org, request_id)
    expires = int(now_s) + ttl_s
    query = urlencode({"org": org, "expires": expires, "sig": keys.sign(_message(org, request_id, expires))})
    return Link(path=f"{PATH_PREFIX}{request_id}?{query}", expires=expires)


def verify(request_id: str, query: Mapping[str, str], *, keys: LinkKeys, now_s: float) -> Claims:
    """The claims of a link whose signature matches and which has not expired; InvalidLink otherwise.

    Parameters other than org, expires and sig are ignored (they are not signed and grant nothing).
    """
    org, expires_text, signature = query.get("org"), query.get("expires"), query.get("sig")
    if not org or not expires_text or not signature:
        raise InvalidLink("missing")
    try:
        object_key(org, request_id)
    except InvalidKey:
        raise InvalidLink("malformed") from None
    if not _EXPIRES.fullmatch(expires_text):
        raise InvalidLink("malformed")
    expires = int(expires_text)
    if not keys.matches(_message(org, request_id, expires), signature):
        raise InvalidLink("bad_signature")
    if expires <= now_s:
        raise InvalidLink("expired")
    return Claims(organization_id=org, request_id=request_id, expires=expires)
