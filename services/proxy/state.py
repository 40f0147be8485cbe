"""The proxy's typed state: the app's ProxyState (behind STATE) and the keys request-scoped values travel under."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from nats.aio.client import Client

from catalog.schema import Catalog
from proto.trace import TraceEvent
from services.proxy import dlp
from services.proxy.auth import KeyRing
from services.proxy.billing_client import BillingClient
from services.proxy.call import Call
from services.proxy.errors import ErrorRenderer
from services.proxy.metrics import ProxyMetrics
from services.proxy.payloads import PayloadPublisher
from services.proxy.providers import Target
from services.proxy.publisher import TracePublisher
from services.proxy.session_revocations import SessionRevocations
from services.proxy.upstream import Upstream
from services.router.client import RoutingView


@dataclass(frozen=True)
class ProxyState:
    keys: KeyRing
    billing: BillingClient
    routing: RoutingView
    catalog: Catalog
    targets: dict[str, Target]
    upstream: Upstream
    publisher: TracePublisher
    nc: Client
    query_timeout_s: float
    max_body_bytes: int
    metrics: ProxyMetrics
    payloads: PayloadPublisher | None = None
    dlp_policies: Mapping[str, dlp.Policy] = field(default_factory=lambda: dlp.load_policies(None))
    public_url: str = ""  # the base of minted payload links; empty = the request's own scheme and host
    payload_max_bytes: int = 8 * 1024 * 1024
    revocations: SessionRevocations | None = None  # dashboard sign-outs shared by every proxy (None: this one only)


STATE = web.AppKey("state", ProxyState)

# Request-scoped values, each set in one place:
REQUEST_ID = web.RequestKey("request_id", str)  # edge: the request's ULID
STARTED = web.RequestKey("started", float)  # edge: perf_counter when the request arrived
RENDER_ERROR: web.RequestKey[ErrorRenderer] = web.RequestKey("render_error")  # an endpoint's handler: its error format
CALL = web.RequestKey("call", Call)  # the pipeline: the metered call (its upstream time, for the overhead)
TRACE = web.RequestKey("trace", TraceEvent)  # the pipeline: the published trace (for the payload archive)
