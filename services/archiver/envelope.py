"""Envelope encryption of one payload archive (pure: bytes in, bytes out, no I/O).

Each object gets a fresh random 256-bit data key; the payload is sealed with AES-256-GCM under that key,
and the data key is wrapped with AES-256-GCM under the active master key. The master key's id travels in
the object's header, so keys can rotate: ROUTEUR_MASTER_KEY is `kid:base64key[,kid:base64key…]`, the
first key seals new objects and every listed key opens old ones.

Format, version 1 (integers are single unsigned bytes):

    offset      size  field
    0           4     magic  b"RTPA"
    4           1     version  1
    5           1     n = length of the key id
    6           n     key id (ASCII)
    6+n         12    wrap nonce
    18+n        48    data key wrapped: AES-256-GCM(master key, wrap nonce, data key,
                                                    AAD = bytes[0:6+n] + request id)
    66+n        12    data nonce
    78+n        ...   AES-256-GCM(data key, data nonce, plaintext, AAD = bytes[0:78+n] + request id),
                      the 16-byte tag last

The request id (UTF-8) is associated data of both layers, so an object copied under another request id
does not open; the key id is covered by both tags, so swapping it is detected too.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.archiver.errors import InvalidMasterKey, MalformedEnvelope, TamperedEnvelope, UnknownKeyId
from services.common import keyring

MAGIC = b"RTPA"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_BYTES = KEY_BYTES + TAG_BYTES
MASTER_KEY_VARIABLE = "ROUTEUR_MASTER_KEY"
_KID = keyring.KID


class MasterKey:
    """One named AES-256 master key; its bytes never appear in repr or str."""

    __slots__ = ("kid", "_key", "_aead")

    def __init__(self, kid: str, key: bytes) -> None:
        if not _KID.fullmatch(kid):
            raise InvalidMasterKey("a master key id must be 1-32 of A-Z a-z 0-9 _ . - starting with a letter or digit")
        if len(key) != KEY_BYTES:
            raise InvalidMasterKey(f"a master key must be {KEY_BYTES} bytes, got {len(key)}")
        self.kid = kid
        self._key = key
        self._aead = AESGCM(key)

    def reveal(self) -> bytes:
        """The raw key bytes (for key derivation only)."""
        return self._key

    def wrap(self, nonce: bytes, data_key: bytes, aad: bytes) -> bytes:
        """AES-256-GCM of a data key under this master key."""
        return self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        """The data key `wrap` sealed; raises cryptography's InvalidTag when anything differs."""
        return self._aead.decrypt(nonce, wrapped, aad)

    def __repr__(self) -> str:
        return f"MasterKey({self.kid!r}, <{KEY_BYTES} bytes>)"

    __str__ = __repr__


class KeyRing(keyring.KeyRing[MasterKey]):
    """Master keys in the order configured: the first seals new objects, all of them open objects."""

    __slots__ = ()
    error = InvalidMasterKey
    empty = "a key ring needs at least one master key"
    duplicate = "master key ids must be unique"


def parse_master_keys(text: str, *, variable: str = MASTER_KEY_VARIABLE) -> KeyRing:
    """Parse `kid:base64key[,kid:base64key…]`; errors name `variable` and the entry, never key material."""
    hint = "each entry is 'kid:base64 of 32 random bytes', e.g. k1:$(openssl rand -base64 32)"
    if not text.strip():
        raise InvalidMasterKey(f"{variable} is empty: {hint}")
    keys: list[MasterKey] = []
    seen: set[str] = set()
    for position, entry in enumerate(text.split(","), start=1):
        kid, colon, material = entry.strip().partition(":")
        if not entry.strip():
            raise InvalidMasterKey(f"{variable}: entry {position} is empty (a stray comma?); {hint}")
        if not colon or not _KID.fullmatch(kid):
            raise InvalidMasterKey(f"{variable}: entry {position} does not start with a key id "
                                   f"(1-32 of A-Z a-z 0-9 _ . -) and ':'; {hint}")
        if kid in seen:
            raise InvalidMasterKey(f"{variable}: key id {kid!r} is listed twice; key ids must be unique")
        key = keyring.decode_base64(material)
        if key is None:
            raise InvalidMasterKey(f"{variable}: key {kid!r} is not valid base64; {hint}")
        if len(key) != KEY_BYTES:
            raise InvalidMasterKey(f"{variable}: key {kid!r} decodes to {len(key)} bytes, AES-256 needs "
                                   f"{KEY_BYTES}; {hint}")
        seen.add(kid)
        keys.append(MasterKey(kid, key))
    return KeyRing(keys)


def seal(plaintext: bytes, request_id: str, keys: KeyRing) -> bytes:
    """Encrypt `plaintext` for `request_id` under a fresh data key wrapped by the active master key."""
    master = keys.active
    kid = master.kid.encode("ascii")
    rid = request_id.encode("utf-8")
    head = MAGIC + bytes((VERSION, len(kid))) + kid
    data_key = os.urandom(KEY_BYTES)
    wrap_nonce = os.urandom(NONCE_BYTES)
    wrapped = master.wrap(wrap_nonce, data_key, head + rid)
    header = head + wrap_nonce + wrapped + os.urandom(NONCE_BYTES)
    return header + AESGCM(data_key).encrypt(header[-NONCE_BYTES:], plaintext, header + rid)


def envelope_kid(blob: bytes) -> str:
    """The master key id an envelope was sealed under; MalformedEnvelope when `blob` is not an envelope."""
    if len(blob) < 6 or blob[:4] != MAGIC:
        raise MalformedEnvelope("not a payload envelope (magic bytes missing)")
    if blob[4] != VERSION:
        raise MalformedEnvelope(f"payload envelope version {blob[4]} is not supported (this archiver reads {VERSION})")
    size = blob[5]
    if len(blob) < 6 + size + NONCE_BYTES + WRAPPED_BYTES + NONCE_BYTES + TAG_BYTES:
        raise MalformedEnvelope("payload envelope is truncated")
    try:
        kid = bytes(blob[6 : 6 + size]).decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEnvelope("payload envelope key id is not ASCII") from None
    if not _KID.fullmatch(kid):
        raise MalformedEnvelope("payload envelope key id is malformed")
    return kid


def open_sealed(blob: bytes, request_id: str, keys: KeyRing) -> bytes:
    """Decrypt an envelope made by `seal` for the same `request_id`.

    Raises MalformedEnvelope, UnknownKeyId (the key id is not in `keys`) or TamperedEnvelope (a byte was
    changed, or `request_id` is not the one the object was sealed for).
    """
    blob = bytes(blob)
    kid = envelope_kid(blob)
    master = keys.find(kid)
    if master is None:
        raise UnknownKeyId(f"payload was sealed under master key {kid!r}, which {MASTER_KEY_VARIABLE} does not "
                           "list; add it after the active key", kid=kid)
    rid = request_id.encode("utf-8")
    head_end = 6 + len(kid)
    wrap_end = head_end + NONCE_BYTES + WRAPPED_BYTES
    header_end = wrap_end + NONCE_BYTES
    try:
        data_key = master.unwrap(blob[head_end : head_end + NONCE_BYTES], blob[head_end + NONCE_BYTES : wrap_end],
                                 blob[:head_end] + rid)
        return AESGCM(data_key).decrypt(blob[wrap_end:header_end], blob[header_end:], blob[:header_end] + rid)
    except InvalidTag:
        raise TamperedEnvelope("payload envelope failed authentication: modified, or sealed for another "
                               "request id") from None
