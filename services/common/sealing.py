"""Sealed boxes for payloads crossing the bus (pure: bytes in, bytes out, no I/O).

A sender seals to a recipient's X25519 public key with a fresh ephemeral key per message: the shared
secret goes through HKDF-SHA256 to an AES-256-GCM key, and the caller's associated data (e.g. the request
id and organization) is bound to the ciphertext. The recipient's key id travels in the header, so the
recipient can rotate: it keeps old private keys to open messages sealed before the rotation.

Format, version 1 (integers are single unsigned bytes):

    offset      size  field
    0           4     magic  b"RTSB"
    4           1     version  1
    5           1     n = length of the key id
    6           n     key id (ASCII)
    6+n         8     fingerprint of the recipient's public key: SHA-256(public key)[:8]
    14+n        32    the sender's ephemeral X25519 public key
    46+n        12    nonce
    58+n        ...   AES-256-GCM(HKDF(X25519(ephemeral, recipient), salt = ephemeral || recipient public,
                                       info = b"routeur-seal-v1"), nonce, plaintext,
                                  AAD = bytes[0:58+n] + associated data), the 16-byte tag last

The fingerprint tells "sealed to a key this recipient does not hold" (a sender configured with another
public key under the same id: keep the message until the right key is installed) from "modified".

Key text (settings): a private key ring is `kid:base64(32 bytes)[,kid:base64(32 bytes)…]` (the first is
the active one, whose public key senders are given); a public key is `kid:base64(32 bytes)`.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from services.common import keyring

MAGIC = b"RTSB"
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
FINGERPRINT_BYTES = 8
INFO = b"routeur-seal-v1"
ONE_TIME_KID = "once"  # the key id of one-time recipient keys (a payload fetch's reply key): nothing to rotate
_KID = keyring.KID


class SealingError(ValueError):
    """Base of the sealing errors; messages never hold key material or plaintext.

    SealingError
     ├── InvalidSealKey      a key's text or bytes are not a usable X25519 key
     ├── MalformedSealed     not a sealed box of a version this code reads
     ├── UnknownSealKey      sealed to a key id the recipient does not hold
     └── SealAuthFailed      modified, sealed to another key, or other associated data
    """

    code = "sealing_error"


class InvalidSealKey(SealingError):
    code = "invalid_seal_key"


class MalformedSealed(SealingError):
    code = "malformed_sealed"


class UnknownSealKey(SealingError):
    code = "unknown_seal_key"

    def __init__(self, message: str, *, kid: str) -> None:
        super().__init__(message)
        self.kid = kid


class SealAuthFailed(SealingError):
    code = "seal_auth_failed"


def _check_kid(kid: str) -> None:
    if not _KID.fullmatch(kid):
        raise InvalidSealKey("a seal key id must be 1-32 of A-Z a-z 0-9 _ . - starting with a letter or digit")


class PublicSealKey:
    """A recipient's X25519 public key and its id."""

    __slots__ = ("kid", "raw", "fingerprint", "_key")

    def __init__(self, kid: str, raw: bytes) -> None:
        _check_kid(kid)
        if len(raw) != KEY_BYTES:
            raise InvalidSealKey(f"an X25519 public key is {KEY_BYTES} bytes, got {len(raw)}")
        self.kid = kid
        self.raw = bytes(raw)
        self.fingerprint = hashlib.sha256(self.raw).digest()[:FINGERPRINT_BYTES]
        self._key = X25519PublicKey.from_public_bytes(self.raw)

    @property
    def key(self) -> X25519PublicKey:
        return self._key

    def text(self) -> str:
        """`kid:base64`, the form settings read."""
        return f"{self.kid}:{base64.b64encode(self.raw).decode()}"

    def __repr__(self) -> str:
        return f"PublicSealKey({self.kid!r})"


class PrivateSealKey:
    """One named X25519 private key; its bytes never appear in repr or str."""

    __slots__ = ("kid", "_key", "public")

    def __init__(self, kid: str, raw: bytes) -> None:
        _check_kid(kid)
        if len(raw) != KEY_BYTES:
            raise InvalidSealKey(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
        self.kid = kid
        self._key = X25519PrivateKey.from_private_bytes(bytes(raw))
        self.public = PublicSealKey(kid, self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def generate(cls, kid: str) -> PrivateSealKey:
        """A fresh random key (an ephemeral reply key, or a new archiver key)."""
        raw = X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return cls(kid, raw)

    def text(self) -> str:
        """`kid:base64` of the private key (for the launcher to write into a secret file)."""
        raw = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return f"{self.kid}:{base64.b64encode(raw).decode()}"

    def exchange(self, peer: bytes) -> bytes:
        return self._key.exchange(X25519PublicKey.from_public_bytes(peer))

    def __repr__(self) -> str:
        return f"PrivateSealKey({self.kid!r}, <{KEY_BYTES} bytes>)"

    __str__ = __repr__


class SealKeyRing(keyring.KeyRing["PrivateSealKey"]):
    """A recipient's private keys: the first is active (its public key is handed to senders); every key
    opens what was sealed to it."""

    __slots__ = ()
    error = InvalidSealKey
    empty = "a seal key ring needs at least one private key"
    duplicate = "seal key ids must be unique"


def _entries(text: str, variable: str, hint: str) -> list[tuple[str, bytes]]:
    if not text.strip():
        raise InvalidSealKey(f"{variable} is empty: {hint}")
    out: list[tuple[str, bytes]] = []
    for position, entry in enumerate(text.split(","), start=1):
        kid, colon, material = entry.strip().partition(":")
        if not entry.strip():
            raise InvalidSealKey(f"{variable}: entry {position} is empty (a stray comma?); {hint}")
        if not colon or not _KID.fullmatch(kid):
            raise InvalidSealKey(f"{variable}: entry {position} does not start with a key id "
                                 f"(1-32 of A-Z a-z 0-9 _ . -) and ':'; {hint}")
        raw = keyring.decode_base64(material)
        if raw is None or len(raw) != KEY_BYTES:
            raise InvalidSealKey(f"{variable}: key {kid!r} is not base64 of {KEY_BYTES} bytes; {hint}")
        out.append((kid, raw))
    return out


def parse_private_keys(text: str, *, variable: str) -> SealKeyRing:
    """`kid:base64[,kid:base64…]` → a ring; errors name `variable` and the entry, never key material."""
    hint = ("each entry is 'kid:base64 of a 32-byte X25519 private key' (make run writes one to .data/secrets.env); "
            "the first is active, older ones follow")
    entries = _entries(text, variable, hint)
    if len({kid for kid, _ in entries}) != len(entries):
        raise InvalidSealKey(f"{variable}: key ids must be unique")
    return SealKeyRing([PrivateSealKey(kid, raw) for kid, raw in entries])


def parse_public_key(text: str, *, variable: str) -> PublicSealKey:
    """`kid:base64` of one X25519 public key."""
    hint = "'kid:base64 of the archiver's 32-byte X25519 public key'"
    entries = _entries(text, variable, hint)
    if len(entries) != 1:
        raise InvalidSealKey(f"{variable} holds one key, got {len(entries)}; {hint}")
    return PublicSealKey(*entries[0])


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ephemeral + recipient, info=INFO).derive(shared)


def seal(plaintext: bytes, associated_data: bytes, recipient: PublicSealKey) -> bytes:
    """Encrypt `plaintext` so that only `recipient`'s private key opens it, for the same associated data."""
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = _derive(ephemeral.exchange(recipient.key), ephemeral_raw, recipient.raw)
    kid = recipient.kid.encode("ascii")
    header = MAGIC + bytes((VERSION, len(kid))) + kid + recipient.fingerprint + ephemeral_raw + os.urandom(NONCE_BYTES)
    return header + AESGCM(key).encrypt(header[-NONCE_BYTES:], plaintext, header + associated_data)


def is_sealed(blob: bytes) -> bool:
    """Whether `blob` starts like a sealed box (a cheap check, not a verification)."""
    return blob[:4] == MAGIC


def sealed_kid(blob: bytes) -> str:
    """The key id a box was sealed to; MalformedSealed when `blob` is not a box this code reads."""
    if len(blob) < 6 or blob[:4] != MAGIC:
        raise MalformedSealed("not a sealed box (magic bytes missing)")
    if blob[4] != VERSION:
        raise MalformedSealed(f"sealed box version {blob[4]} is not supported (this code reads {VERSION})")
    size = blob[5]
    if len(blob) < 6 + size + FINGERPRINT_BYTES + KEY_BYTES + NONCE_BYTES + TAG_BYTES:
        raise MalformedSealed("sealed box is truncated")
    try:
        kid = bytes(blob[6 : 6 + size]).decode("ascii")
    except UnicodeDecodeError:
        raise MalformedSealed("sealed box key id is not ASCII") from None
    if not _KID.fullmatch(kid):
        raise MalformedSealed("sealed box key id is malformed")
    return kid


def open_sealed(blob: bytes, associated_data: bytes, keys: SealKeyRing) -> bytes:
    """The plaintext `seal` encrypted for the same associated data.

    Raises MalformedSealed, UnknownSealKey (sealed to a key id `keys` does not hold) or SealAuthFailed.
    """
    blob = bytes(blob)
    kid = sealed_kid(blob)
    private = keys.find(kid)
    if private is None:
        raise UnknownSealKey(f"sealed to key {kid!r}, which this key ring does not hold", kid=kid)
    start = 6 + len(kid) + FINGERPRINT_BYTES
    if blob[start - FINGERPRINT_BYTES : start] != private.public.fingerprint:
        raise UnknownSealKey(f"sealed to another public key under id {kid!r} than the one this key ring holds "
                             "(the sender's public key does not match this private key)", kid=kid)
    ephemeral_raw = blob[start : start + KEY_BYTES]
    header_end = start + KEY_BYTES + NONCE_BYTES
    try:
        key = _derive(private.exchange(ephemeral_raw), ephemeral_raw, private.public.raw)
        return AESGCM(key).decrypt(blob[header_end - NONCE_BYTES : header_end], blob[header_end:],
                                   blob[:header_end] + associated_data)
    except (InvalidTag, ValueError):
        raise SealAuthFailed("sealed box failed authentication: modified, sealed to another key, or for other "
                             "associated data") from None
