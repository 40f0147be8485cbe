"""Who is calling: the request's credential (bearer header, x-api-key, or the dashboard's cookie on GET/HEAD)
as a Principal — the admin token checked locally, API keys by billing (cached, see billing_client.py)."""

from __future__ import annotations

from aiohttp import web

from services.proxy.auth import ADMIN, Principal, well_formed
from services.proxy.dashboard import session_credential
from services.proxy.errors import AuthError
from services.proxy.state import STATE


def api_key(request: web.Request) -> str:
    """The key presented as `Authorization: Bearer …` or `x-api-key` (Anthropic's header), else ""."""
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[7:].strip()
    return request.headers.get("x-api-key", "").strip()


async def principal(request: web.Request, *, allow_admin: bool = False) -> Principal:
    """The admin (when allowed and the admin token is presented) or the key's owner, as billing says."""
    state = request.app[STATE]
    key = api_key(request) or session_credential(request)  # the dashboard's cookie, on GET/HEAD only
    if not key:
        raise AuthError("No API key provided. Send it as 'Authorization: Bearer <key>'.")
    if not well_formed(key):
        raise AuthError("Incorrect API key provided: keys are printable ASCII.")
    if allow_admin and state.keys.authenticate(f"Bearer {key}", allow_admin=True) is not None:
        return ADMIN
    reply = await state.billing.authenticate(key)
    return Principal(organization_id=reply.organization_id, api_key_id=reply.api_key_id or "")
