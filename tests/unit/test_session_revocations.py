"""The sign-out list's pure part, and cookies without a session id (sealed before ids existed) refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.proxy.dashboard.session import Sessions
from services.proxy.session_revocations import LocalRevocations, RevokedSessions


def test_revoked_until_the_session_would_have_expired() -> None:
    now = [1000.0]
    revoked = RevokedSessions(clock=lambda: now[0])
    revoked.add("a" * 32, 1500)
    revoked.add("b" * 32, 900)  # already expired: nothing to remember
    assert "a" * 32 in revoked and "b" * 32 not in revoked and len(revoked) == 1
    now[0] = 1501.0
    revoked.prune()
    assert "a" * 32 not in revoked and len(revoked) == 0


async def test_local_revocations_apply_at_once() -> None:
    local = LocalRevocations()
    await local.revoke("c" * 32, 2**40)
    assert "c" * 32 in local.revoked


def test_a_cookie_sealed_before_session_ids_is_refused() -> None:
    secret = b"s" * 32
    key = hmac.new(secret, b"routeur-dashboard-session-v1", hashlib.sha256).digest()
    nonce = os.urandom(12)
    old_plain = msgspec.json.encode(["rk-secret", 2000])  # the format before: [credential, expires_s]
    old = base64.urlsafe_b64encode(nonce + AESGCM(key).encrypt(nonce, old_plain, b"routeur-dashboard-session-v1"))
    assert Sessions(secret).open(old.decode().rstrip("="), now_s=1000) is None
