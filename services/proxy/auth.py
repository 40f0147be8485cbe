"""Who is calling: the admin token is checked here; API keys are billing's (services/proxy/billing_client.py)."""

from __future__ import annotations

import hashlib
import hmac

import msgspec


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: an organization's API key, or the admin (organization_id None)."""

    organization_id: str | None
    api_key_id: str

    @property
    def is_admin(self) -> bool:
        return self.organization_id is None


ADMIN = Principal(organization_id=None, api_key_id="admin")


MAX_CREDENTIAL = 512


def well_formed(credential: str) -> bool:
    """Whether a presented key or token could be one: printable ASCII, at most MAX_CREDENTIAL characters.
    Anything else (non-ASCII, control characters, undecodable header bytes) is refused before it is hashed,
    sent to billing or compared."""
    return 0 < len(credential) <= MAX_CREDENTIAL and credential.isascii() and credential.isprintable()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyRing:
    """Maps key secrets (held only as SHA-256 digests) to principals."""

    def __init__(self, entries: dict[str, Principal], *, admin_token: str) -> None:
        self._by_digest = {_digest(secret): principal for secret, principal in entries.items()}
        self._admin_digest = _digest(admin_token) if admin_token else None

    @property
    def admin_digest(self) -> bytes | None:
        """SHA-256 of the admin token (key material every replica shares), None without an admin token."""
        return self._admin_digest

    def authenticate(self, authorization: str | None, *, allow_admin: bool = False) -> Principal | None:
        """The principal for an `Authorization: Bearer …` header, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        credential = authorization[7:].strip()
        if not well_formed(credential):
            return None
        digest = _digest(credential)
        if allow_admin and self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return ADMIN
        return self._by_digest.get(digest)
