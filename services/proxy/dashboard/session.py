"""Dashboard sessions: the login credential sealed in an expiring cookie (pure: bytes in, bytes out).

The cookie holds the credential itself (an API key or the admin token) sealed with AES-256-GCM under a key
derived by HMAC-SHA256 from the admin token, so every proxy replica opens any replica's cookie, nothing is
stored server-side, and each request re-checks the credential exactly as a Bearer header would be: a revoked
key stops working within billing's auth cache (~5 s), a rotated admin token ends every session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "routeur_session"
TTL_S = 12 * 3600
_CONTEXT = b"routeur-dashboard-session-v1"
_NONCE = 12
_MAX_COOKIE = 2048


class _Sealed(msgspec.Struct, frozen=True, array_like=True):
    credential: str
    expires_s: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Sealed)


class Sessions:
    """Seals and opens session cookies; `secret` is key material every replica shares."""

    def __init__(self, secret: bytes, *, ttl_s: int = TTL_S) -> None:
        self._aead = AESGCM(hmac.new(secret, _CONTEXT, hashlib.sha256).digest())
        self.ttl_s = ttl_s

    def seal(self, credential: str, *, now_s: float) -> str:
        """The cookie value for a credential that was just verified; it expires `ttl_s` after `now_s`."""
        nonce = os.urandom(_NONCE)
        plain = _encoder.encode(_Sealed(credential, int(now_s) + self.ttl_s))
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, _CONTEXT)).decode().rstrip("=")

    def open(self, cookie: str, *, now_s: float) -> str | None:
        """The credential in a cookie this deployment sealed and that has not expired, else None."""
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            sealed = _decoder.decode(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _CONTEXT))
        except (binascii.Error, ValueError, InvalidTag, msgspec.DecodeError):
            return None
        if sealed.expires_s <= now_s or not sealed.credential:
            return None
        return sealed.credential
