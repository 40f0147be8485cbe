"""Dashboard HTTP routes: login/logout (cookie session), the three pages, the Keys JSON and static assets.

The pages are plain HTML shells whose JavaScript calls the public JSON APIs (`/v1/logs`, `/v1/usage`,
`/v1/traces/{id}`) with the session cookie, so organization scoping is the APIs' own; the cookie is accepted
only on GET/HEAD, so it can never spend. Login and logout check that the POST comes from this origin.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.errors import Error as NatsError

from proto import codec, subjects
from proto.billing import KeysQuery, KeysReply
from services.common.logs import get_logger
from services.proxy.auth import ADMIN, KeyRing, Principal, well_formed
from services.proxy.billing_client import BillingClient, BillingRefused
from services.proxy.dashboard.session import COOKIE, Sessions
from services.proxy.errors import AuthError, NotFound, ProxyError, ServiceUnavailable
from services.proxy.session_revocations import LocalRevocations, SessionRevocations
from services.proxy.state import ProxyState

log = get_logger()

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PAGES_DIR = HERE / "pages"
PREFIX = "/dashboard"
PAGES = {"logs": "Logs", "usage": "Usage", "keys": "Keys"}
_SCRIPTS = {"usage": ("vendor/chart.umd.min.js",)}
_NEXT = re.compile(r"^/dashboard/(?:logs|usage|keys)(?:\?[A-Za-z0-9_.~%&=+:-]{0,500})?$")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_SAFE_METHODS = ("GET", "HEAD")
_decoder = msgspec.json.Decoder()
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Dashboard:
    keys: KeyRing
    billing: BillingClient
    nc: Client
    query_timeout_s: float
    sessions: Sessions
    revocations: SessionRevocations | LocalRevocations
    pages: dict[str, str]
    login_form: str


DASHBOARD = web.AppKey("dashboard", Dashboard)


def _session_secret(keys: KeyRing) -> bytes:
    """Key material every proxy replica shares: the admin token's digest (ROUTEUR_ADMIN_TOKEN)."""
    digest = keys.admin_digest
    if digest is None:
        log.warning("dashboard_sessions_local", reason="no admin token: sessions work on this replica only")
        return os.urandom(32)
    return digest


def add_dashboard(app: web.Application, state: ProxyState) -> None:
    """Register the dashboard on the proxy app (`/dashboard…`); reads its page templates once."""
    app[DASHBOARD] = Dashboard(keys=state.keys, billing=state.billing, nc=state.nc,
                               query_timeout_s=state.query_timeout_s, sessions=Sessions(_session_secret(state.keys)),
                               revocations=state.revocations or LocalRevocations(),
                               pages={page: _page_template(page, title) for page, title in PAGES.items()},
                               login_form=(PAGES_DIR / "login.html").read_text())
    routes = app.router
    routes.add_get(PREFIX, home)
    routes.add_get(PREFIX + "/", home)
    routes.add_get(PREFIX + "/login", login_page)
    routes.add_post(PREFIX + "/login", login)
    routes.add_post(PREFIX + "/logout", logout)
    for page in PAGES:
        routes.add_get(f"{PREFIX}/{page}", show_page)
    routes.add_get(PREFIX + "/api/keys", keys_api)
    routes.add_get(PREFIX + "/static/{path:.+}", _asset_handler())


def _asset_handler() -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Serve the files under static/, listed once at start: no path is ever resolved from the request, so
    nothing outside the directory can be reached, and any other name is a JSON 404."""
    assets = {path.relative_to(STATIC_DIR).as_posix(): path for path in sorted(STATIC_DIR.rglob("*"))
              if path.is_file() and not path.is_symlink()}

    async def asset(request: web.Request) -> web.StreamResponse:
        path = assets.get(request.match_info["path"])
        if path is None:
            raise NotFound(f"no dashboard asset {request.match_info['path'][:80]!r}", code="unknown_url")
        return web.FileResponse(path)

    return asset


def _page_template(page: str, title: str) -> str:
    """The layout with the page's fragment and scripts in place; `{{…}}` values are filled per request."""
    scripts = [f'<script src="{PREFIX}/static/{path}"></script>' for path in _SCRIPTS.get(page, ())]
    scripts.append(f'<script type="module" src="{PREFIX}/static/js/{page}.js"></script>')
    layout = (PAGES_DIR / "layout.html").read_text()
    return (layout.replace("<!--main-->", (PAGES_DIR / f"{page}.html").read_text())
            .replace("<!--scripts-->", "\n".join(scripts)).replace("{{title}}", title).replace("{{page}}", page))


def session_credential(request: web.Request) -> str:
    """The credential in a valid dashboard session cookie, for safe methods only (else "")."""
    dashboard = request.app.get(DASHBOARD)
    if dashboard is None or request.method not in _SAFE_METHODS:
        return ""
    session = dashboard.sessions.open_session(request.cookies.get(COOKIE, ""), now_s=time.time())
    if session is None or session.session_id in dashboard.revocations.revoked:
        return ""
    return session.credential


async def authenticate(dashboard: Dashboard, credential: str) -> Principal:
    """Exactly the proxy's check: the admin token, else billing's verdict on the API key (cached ~5 s)."""
    if dashboard.keys.authenticate(f"Bearer {credential}", allow_admin=True) is not None:
        return ADMIN
    reply = await dashboard.billing.authenticate(credential)
    return Principal(organization_id=reply.organization_id, api_key_id=reply.api_key_id or "")


async def _session(request: web.Request) -> Principal | None:
    """The session's principal, or None when there is no valid session (bad, expired or revoked)."""
    dashboard = request.app[DASHBOARD]
    credential = session_credential(request)
    if not credential:
        return None
    try:
        return await authenticate(dashboard, credential)
    except BillingRefused:
        return None


async def home(request: web.Request) -> web.Response:
    return _redirect(f"{PREFIX}/logs")


async def login_page(request: web.Request) -> web.Response:
    target = _next(request.query.get("next"))
    try:
        signed_in = await _session(request) is not None
    except ServiceUnavailable:
        signed_in = False
    if signed_in:
        return _redirect(target)
    notice = "Your session has ended; sign in again." if request.query.get("ended") else ""
    return _login_form(request, target, notice, status=200)


async def login(request: web.Request) -> web.Response:
    """Form (or JSON) `token` + `next`: verify it like a Bearer header, then set the session cookie."""
    dashboard = request.app[DASHBOARD]
    if not _same_origin(request):
        return _login_form(request, f"{PREFIX}/logs", "The sign-in form must be posted from this site.", status=403)
    fields: dict[str, object] = {}
    if request.content_type == "application/json":
        try:
            body = _decoder.decode(await request.read())
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            body = None
        fields = body if isinstance(body, dict) else {}
    else:
        try:
            fields = dict(await request.post())
        except ValueError:  # a malformed multipart body
            fields = {}
    credential, target = fields.get("token"), _next(fields.get("next"))
    if not isinstance(credential, str) or not well_formed(credential.strip()):
        return _login_form(request, target, "Enter an API key or the admin token.", status=400)
    credential = credential.strip()
    try:
        principal = await authenticate(dashboard, credential)
    except BillingRefused:
        return _login_form(request, target, "That key or token was not accepted.", status=401)
    except ServiceUnavailable:
        return _login_form(request, target, "Billing is unavailable, so keys cannot be checked; try again shortly.",
                           status=503)
    log.info("dashboard_login", organization_id=principal.organization_id, api_key_id=principal.api_key_id)
    response = _redirect(target)
    response.set_cookie(COOKIE, dashboard.sessions.seal(credential, now_s=time.time()),
                        max_age=dashboard.sessions.ttl_s, path="/", httponly=True, samesite="Strict",
                        secure=_is_https(request))
    return response


async def logout(request: web.Request) -> web.Response:
    if not _same_origin(request):
        return _page_response("<p>Sign out must be posted from this site.</p>", status=403)
    dashboard = request.app[DASHBOARD]
    session = dashboard.sessions.open_session(request.cookies.get(COOKIE, ""), now_s=time.time())
    if session is not None:  # end it on every proxy, so a copy of the cookie stops working too
        try:
            await dashboard.revocations.revoke(session.session_id, session.expires_s)
        except Exception as exc:  # not recorded: keep the cookie so that signing out can be retried
            log.warning("dashboard_logout_not_recorded", error=type(exc).__name__)
            return _page_response("<p>Sign-out could not be recorded (the message bus is unavailable); your "
                                  "session is still open. Try again shortly.</p>", status=503)
    response = _redirect(f"{PREFIX}/login")
    response.set_cookie(COOKIE, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path="/", httponly=True,
                        samesite="Strict", secure=_is_https(request))
    return response


async def show_page(request: web.Request) -> web.Response:
    page = request.path.rsplit("/", 1)[-1]
    try:
        principal = await _session(request)
    except ServiceUnavailable:
        return _page_response("<p>Billing is unavailable, so the session cannot be checked; reload shortly.</p>",
                              status=503)
    if principal is None:
        ended = "&ended=1" if COOKIE in request.cookies else ""
        return _redirect(f"{PREFIX}/login?next={quote(request.path_qs, safe='')}{ended}")
    who = "admin" if principal.is_admin else f"{principal.organization_id} · {principal.api_key_id}"
    body = _render(request.app[DASHBOARD].pages[page], who=who, admin="true" if principal.is_admin else "false",
                   organization=principal.organization_id or "")
    return _page_response(body)


async def keys_api(request: web.Request) -> web.Response:
    """`GET /dashboard/api/keys`: wallets and keys (limits, spend against maxSpend); an org sees only itself."""
    dashboard = request.app[DASHBOARD]
    credential = _bearer(request) or session_credential(request)
    if not credential:
        raise AuthError("No API key provided. Sign in at /dashboard/login or send 'Authorization: Bearer <key>'.")
    if not well_formed(credential):
        raise AuthError("Incorrect API key provided: keys are printable ASCII.")
    principal = await authenticate(dashboard, credential)
    organization = (request.query.get("organization_id") or None) if principal.is_admin else principal.organization_id
    try:
        message = await dashboard.nc.request(subjects.BILLING_KEYS, codec.encode(KeysQuery(organization)),
                                             timeout=dashboard.query_timeout_s)
    except (TimeoutError, NatsError):
        raise ServiceUnavailable("billing did not answer; try again shortly", code="billing_unavailable") from None
    reply = codec.decode(message.data, KeysReply)
    if reply.error:
        raise ProxyError(f"key listing failed: {reply.error}", status=502, code="billing_error")
    return web.Response(body=codec.encode({"object": "keys", "organizations": reply.organizations,
                                           "data": reply.keys, "truncated": reply.truncated}),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _bearer(request: web.Request) -> str:
    authorization = request.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[7:].strip()
    return request.headers.get("x-api-key", "").strip()


def _same_origin(request: web.Request) -> bool:
    """CSRF guard for POSTs (on top of SameSite=Strict): Origin (or Referer) must name this host."""
    origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.host.lower()


def _is_https(request: web.Request) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _next(target: object) -> str:
    """Where to go after sign-in: one of the dashboard pages (never another site)."""
    if isinstance(target, str) and _NEXT.match(target):
        return target
    return f"{PREFIX}/logs"


def _render(template: str, **values: str) -> str:
    """Fill `{{name}}` placeholders in one pass, every value HTML-escaped."""
    return _PLACEHOLDER.sub(lambda m: html.escape(values[m.group(1)], quote=True), template)


def _login_form(request: web.Request, target: str, message: str, *, status: int) -> web.Response:
    body = _render(request.app[DASHBOARD].login_form, next=target, message=message,
                   hidden="" if message else "hidden")
    return _page_response(body, status=status)


def _page_response(body: str, *, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=_SECURITY_HEADERS)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **_SECURITY_HEADERS})
