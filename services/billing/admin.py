"""Billing's admin HTTP API (Bearer ROUTEUR_ADMIN_TOKEN): organizations, wallets, keys, limits, settings, spend."""

from __future__ import annotations

import hmac
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from nats.aio.client import Client

from proto import codec
from proto.billing import KeyLimits, KeySettings, Period
from services.billing import errors
from services.billing.overview import key_view, org_view
from services.billing.service import Billing
from services.billing.settings import Settings
from services.billing.validate import KeyPatch, OrgPatch
from services.common.health import add_health_routes
from services.common.logs import get_logger
from services.common.metrics import add_metrics_route

log = get_logger()
T = TypeVar("T")
PREFIX = "/v1/admin"
_PARAM = re.compile(r"(?:at `\$\.|field `)([A-Za-z0-9_]+)")


class CreateOrg(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str | None = None
    name: str = ""
    archive_payloads: bool = False
    dlp_policy: str = "off"


class TopUpBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    amount_usd: Decimal
    topup_id: str | None = None
    note: str = ""


class AdjustBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    amount_usd: Decimal
    reason: str
    adjustment_id: str | None = None


class CreateKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str = ""
    max_spend_usd: Decimal | None = None
    period: Period = "total"
    rate_limit_rpm: int | None = None
    token_limit_tpm: int | None = None
    archive_payloads: bool = False
    dlp_policy: str = "off"
    secret: str | None = None


async def _body(request: web.Request, kind: type[T], *, empty_ok: bool = False) -> T:
    raw = await request.read()
    if not raw.strip() and empty_ok:
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        found = _PARAM.search(str(exc))
        raise errors.InvalidRequest(f"invalid body: {exc}", param=found.group(1) if found else None) from None
    except msgspec.DecodeError as exc:
        raise errors.InvalidRequest(f"the body must be a JSON object: {exc}") from None
    except (UnicodeDecodeError, RecursionError):
        raise errors.InvalidRequest("the body must be a JSON object in UTF-8") from None


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=codec.encode(value), content_type="application/json")


def _now_ms() -> int:
    return int(time.time() * 1000)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(settings: Settings, billing: Billing, nc: Client) -> web.Application:
    """Health probes and the admin routes under /v1/admin."""
    token = settings.admin_token.reveal().encode()
    ledger, store = billing.ledger, billing.store

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path.startswith(PREFIX + "/"):
                given = request.headers.get("Authorization", "")
                presented = given[7:].strip().encode("utf-8", "surrogateescape")  # undecodable bytes stay bytes
                if not given.startswith("Bearer ") or not hmac.compare_digest(presented, token):
                    raise errors.AdminAuthError("an admin token is required: Authorization: Bearer "
                                                "<ROUTEUR_ADMIN_TOKEN>")
            return await handler(request)
        except errors.BillingError as exc:
            return _json(exc.body(), exc.status)
        except web.HTTPNotFound:
            return _json(errors.NotFound(f"no route {request.path}", code="unknown_url").body(), 404)
        except web.HTTPException as exc:  # 405, 413 …: the same error shape as everything else
            code = {405: "method_not_allowed", 413: "request_too_large"}.get(exc.status, "invalid_request")
            return _json({"error": {"message": exc.reason, "type": "invalid_request_error", "param": None,
                                    "code": code}}, exc.status)
        except Exception as exc:  # a bug: log it, answer in the same shape
            log.exception("admin_request_failed", error=type(exc).__name__, path=request.path)
            return _json(errors.BillingError("internal error; see the billing log").body(), 500)

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)

    async def ready() -> dict[str, object]:
        following = store.following
        return {"ready": nc.is_connected and following, "nats": nc.is_connected, "ledger_following": following,
                "ledger_seq": store.applied_seq, "open_reservations": ledger.open_reservations,
                "undecodable_events": store.undecodable}

    async def list_orgs(_: web.Request) -> web.Response:
        counts = Counter(key.organization_id for key in ledger.state.keys.values())
        return _json({"data": [org_view(ledger, org, counts[org.id]) for org in ledger.state.orgs.values()]})

    async def create_org(request: web.Request) -> web.Response:
        body = await _body(request, CreateOrg, empty_ok=True)
        event = ledger.create_org(now_ms=_now_ms(), name=body.name, org_id=body.id,
                                  settings=KeySettings(archive_payloads=body.archive_payloads,
                                                       dlp_policy=body.dlp_policy))
        if await store.append(event):
            raise errors.Conflict(f"organization {event.organization_id!r} already exists", param="id")
        return _json(org_view(ledger, ledger.org(event.organization_id)), 201)

    async def get_org(request: web.Request) -> web.Response:
        return _json(org_view(ledger, ledger.org(request.match_info["org_id"])))

    async def update_org(request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        patch = await _body(request, OrgPatch)
        await store.append(ledger.update_org(org_id, patch, now_ms=_now_ms()))
        return _json(org_view(ledger, ledger.org(org_id)))

    async def top_up(request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        body = await _body(request, TopUpBody)
        event = ledger.top_up(org_id, body.amount_usd, now_ms=_now_ms(), topup_id=body.topup_id, note=body.note)
        duplicate = event is None or await store.append(event)
        return _json({"organization": org_view(ledger, ledger.org(org_id)), "duplicate": duplicate,
                      "topup_id": body.topup_id if event is None else event.topup_id})

    async def adjust(request: web.Request) -> web.Response:
        org_id = request.match_info["org_id"]
        body = await _body(request, AdjustBody)
        event = ledger.adjust(org_id, body.amount_usd, reason=body.reason, now_ms=_now_ms(),
                              adjustment_id=body.adjustment_id)
        duplicate = event is None or await store.append(event)
        return _json({"organization": org_view(ledger, ledger.org(org_id)), "duplicate": duplicate,
                      "adjustment_id": body.adjustment_id if event is None else event.adjustment_id})

    async def list_keys(request: web.Request) -> web.Response:
        org = ledger.org(request.match_info["org_id"])
        now_ms = _now_ms()
        return _json({"data": [key_view(ledger, key, now_ms) for key in ledger.state.keys.values()
                               if key.organization_id == org.id]})

    async def create_key(request: web.Request) -> web.Response:
        body = await _body(request, CreateKey, empty_ok=True)
        limits = KeyLimits(max_spend_usd=body.max_spend_usd, period=body.period, rate_limit_rpm=body.rate_limit_rpm,
                           token_limit_tpm=body.token_limit_tpm)
        event, secret = ledger.create_key(request.match_info["org_id"], now_ms=_now_ms(), name=body.name,
                                          limits=limits, secret=body.secret,
                                          settings=KeySettings(archive_payloads=body.archive_payloads,
                                                               dlp_policy=body.dlp_policy))
        await store.append(event)
        key = ledger.key(event.api_key_id)
        if key is None:  # a concurrent request created the same secret first
            raise errors.Conflict("a key with this secret already exists", param="secret")
        view = msgspec.structs.asdict(key_view(ledger, key, event.ts_ms))
        return _json({**view, "secret": secret}, 201)

    async def get_key(request: web.Request) -> web.Response:
        return _json(key_view(ledger, ledger.existing_key(request.match_info["key_id"]), _now_ms()))

    async def update_key(request: web.Request) -> web.Response:
        key_id = request.match_info["key_id"]
        patch = await _body(request, KeyPatch)
        await store.append(ledger.update_key(key_id, patch, now_ms=_now_ms()))
        return _json(key_view(ledger, ledger.existing_key(key_id), _now_ms()))

    async def revoke_key(request: web.Request) -> web.Response:
        key_id = request.match_info["key_id"]
        event = ledger.revoke_key(key_id, now_ms=_now_ms())
        if event is not None:
            await store.append(event)
        return _json(key_view(ledger, ledger.existing_key(key_id), _now_ms()))

    add_health_routes(app, ready)
    add_metrics_route(app, billing.metrics.registry)
    routes = app.router
    routes.add_get(f"{PREFIX}/organizations", list_orgs)
    routes.add_post(f"{PREFIX}/organizations", create_org)
    routes.add_get(f"{PREFIX}/organizations/{{org_id}}", get_org)
    routes.add_patch(f"{PREFIX}/organizations/{{org_id}}", update_org)
    routes.add_post(f"{PREFIX}/organizations/{{org_id}}/topups", top_up)
    routes.add_post(f"{PREFIX}/organizations/{{org_id}}/adjustments", adjust)
    routes.add_get(f"{PREFIX}/organizations/{{org_id}}/keys", list_keys)
    routes.add_post(f"{PREFIX}/organizations/{{org_id}}/keys", create_key)
    routes.add_get(f"{PREFIX}/keys/{{key_id}}", get_key)
    routes.add_patch(f"{PREFIX}/keys/{{key_id}}", update_key)
    routes.add_post(f"{PREFIX}/keys/{{key_id}}/revoke", revoke_key)
    routes.add_delete(f"{PREFIX}/keys/{{key_id}}", revoke_key)
    return app
