"""Dashboard sessions: the login credential sealed in an expiring cookie (pure: bytes in, bytes out).

The cookie holds the credential itself (an API key or the admin token) sealed with AES-256-GCM under a key
derived by HMAC-SHA256 from the admin token, so every proxy replica opens any replica's cookie, and each
request re-checks the credential exactly as a Bearer header would be: a revoked key stops working within
billing's auth cache (~5 s), a rotated admin token ends every session. Each cookie also carries a random
session id: sign-out puts it on the list every proxy shares (services/proxy/session_revocations.py), so a
copy of the cookie stops working everywhere too. A cookie without an id (sealed before ids existed) is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets

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
    session_id: str = ""  # names the session on the sign-out list


class OpenSession(msgspec.Struct, frozen=True):
    """A cookie that opened: the credential to re-check, the session's id and when it expires."""

    credential: str
    session_id: str
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
        plain = _encoder.encode(_Sealed(credential, int(now_s) + self.ttl_s, secrets.token_hex(16)))
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, _CONTEXT)).decode().rstrip("=")

    def open(self, cookie: str, *, now_s: float) -> str | None:
        """The credential in a cookie this deployment sealed and that has not expired, else None."""
        session = self.open_session(cookie, now_s=now_s)
        return session.credential if session is not None else None

    def open_session(self, cookie: str, *, now_s: float) -> OpenSession | None:
        """The session in a cookie this deployment sealed, with an id, not expired; else None (the caller also
        checks the id against the sign-out list)."""
        if not cookie or len(cookie) > _MAX_COOKIE:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            sealed = _decoder.decode(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _CONTEXT))
        except (binascii.Error, ValueError, InvalidTag, msgspec.DecodeError):
            return None
        if sealed.expires_s <= now_s or not sealed.credential or not sealed.session_id:
            return None
        return OpenSession(sealed.credential, sealed.session_id, sealed.expires_s)
