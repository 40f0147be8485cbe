"""One metered request's facts as it is served, changed only through its transitions; becomes the trace.

    parsed ── routed ── admitted ── screened ── trying ── attempt_started ── upstream_answered ── attempted
                                                  ▲                                                │
                                                  └──────────── retrying (next candidate) ◄────────┘
    then answered (+ first_byte_sent, saw_chunk, estimate_usage) or stream_broken / caller_gone / failed,
    and trace() at the end

Fields are written only by the methods below (the pipeline, chat.py and embeddings.py call them); readers
read the fields.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from catalog import pricing
from catalog.schema import Model, Route
from proto.routing import ATTEMPT_CLIENT_CLOSED, ATTEMPT_STREAM_INTERRUPTED
from proto.trace import Attempt, TraceEvent
from services.proxy import openai_wire as wire
from services.proxy.auth import Principal
from services.proxy.errors import ProxyError
from services.proxy.payloads import Capture
from services.router.policy import Candidate, Decision

OVERHEAD_HEADER = "x-routeur-overhead-ms"
CLIENT_CLOSED_CODE = "client_closed_request"


def overhead_header(started: float, upstream_s: float, now: float) -> str:
    """`x-routeur-overhead-ms`: the time Routeur itself spent on a request so far (all of it but the upstream's)."""
    return f"{(now - started - upstream_s) * 1000:.3f}"


@dataclass
class Call:
    """Mutable facts gathered while one request is served; becomes the trace at the end."""

    request_id: str
    principal: Principal
    started: float  # perf_counter when the request reached the proxy
    started_ms: int
    endpoint: str
    requested_model: str = ""
    model: Model | None = None
    route: Route | None = None
    stream: bool = False
    status_code: int = 0
    usage: wire.Usage | None = None
    upstream_started: float = 0.0
    upstream_ended: float = 0.0
    first_byte: float | None = None
    error_type: str | None = None
    error_code: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    stream_head: wire.ChunkHead | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    usage_estimated: bool = False
    prompt_bytes: int = 0
    route_reason: str = "default"
    first_choice: str | None = None
    fallback_reason: str | None = None
    redactions: int = 0
    restore: dict[str, str] | None = None  # DLP placeholder -> original, when the policy restores answers
    dlp_active: bool = False  # the key's DLP policy screens bodies (any mode but off)
    capture: Capture | None = None  # the payload layers, when the key archives payloads

    # ------------------------------------------------------------------------------------ transitions

    def parsed(self, body: Mapping[str, Any], prompt_bytes: int) -> None:
        """The request body is read (`prompt_bytes` long) and valid."""
        self.requested_model = body["model"]
        self.stream = bool(body.get("stream"))
        self.prompt_bytes = prompt_bytes

    def routed(self, decision: Decision) -> None:
        """Its routes are decided."""
        self.model, self.route = decision.model, decision.candidates[0].route
        self.route_reason = decision.route_reason
        self.first_choice = decision.first_choice.key
        self.fallback_reason = decision.fallback_reason

    def admitted(self, headers: Mapping[str, str], *, capture: Capture | None) -> None:
        """Billing admitted it: its rate-limit `headers` go back to the caller; `capture` when the key archives."""
        self.response_headers.update(headers)
        self.capture = capture

    def screened(self, redactions: int, restore: dict[str, str] | None, *, active: bool = False) -> None:
        """DLP screened the body: `redactions` substitutions, the map that restores answers when asked, and
        whether the key's policy looks at all (`active`: any mode but off)."""
        self.redactions = redactions
        self.restore = restore or None
        self.dlp_active = active

    def trying(self, candidate: Candidate) -> None:
        """The next route to call."""
        self.model, self.route = candidate.model, candidate.route

    def retrying(self, reason: str) -> None:
        """The route just tried failed in a way the next candidate may not: `reason` says why it is tried."""
        self.fallback_reason = reason

    def attempt_started(self, upstream_request: bytes) -> None:
        """An upstream call is about to be made with `upstream_request` as its body."""
        if self.capture is not None:
            self.capture.upstream_request, self.capture.upstream_response = upstream_request, b""
            self.capture.upstream_chunks.clear()
        self.upstream_started, self.upstream_ended = time.perf_counter(), 0.0

    def upstream_answered(self, raw: bytes | None = None) -> None:
        """The upstream's answer is complete (`raw`: its body, when not streamed)."""
        if raw is not None and self.capture is not None:
            self.capture.upstream_response = raw
        self.upstream_ended = self.upstream_ended or time.perf_counter()

    def attempted(self, status: int, error_type: str | None) -> None:
        """The current attempt is over: recorded for the trace and the router (its latency counts from its start)."""
        route = self.route
        assert route is not None, "trying() names the route before an attempt"
        self.upstream_answered()
        latency = (time.perf_counter() - self.upstream_started) * 1000
        self.attempts.append(Attempt(route.provider, route.upstream_model, status, round(latency, 3), error_type))

    def first_byte_sent(self, at: float | None = None) -> None:
        if self.first_byte is None:
            self.first_byte = at if at is not None else time.perf_counter()

    def saw_chunk(self, head: wire.ChunkHead | None, usage: wire.Usage | None) -> None:
        """A streamed chunk went by: the first one's identifying fields, and usage whenever a chunk carries it."""
        if self.stream_head is None:
            self.stream_head = head
        if usage is not None:
            self.usage = usage

    def answered(self, status: int, usage: wire.Usage | None = None, *, estimated: bool = False) -> None:
        """The caller is answered with `status` (the stream's headers are sent, or the whole reply is ready)."""
        self.status_code = status
        if usage is not None:
            self.usage, self.usage_estimated = usage, estimated

    def estimate_usage(self, sent: list[bytes]) -> None:
        """Usage from what was streamed, when the upstream reported none."""
        if self.usage is None and sent:
            self.usage, self.usage_estimated = wire.estimate_usage(sent, prompt_bytes=self.prompt_bytes), True

    def stream_broken(self, error_type: str | None, code: str) -> None:
        """The upstream stream ended without completing: the caller got an error event after a 200."""
        self.status_code, self.error_code = 502, code
        self.error_type = error_type or ATTEMPT_STREAM_INTERRUPTED
        self.attempted(502, self.error_type)

    def caller_gone(self, sent: list[bytes]) -> None:
        """The caller hung up mid-stream; it is billed for what it was sent."""
        self.upstream_answered()
        self.estimate_usage(sent)
        self.attempted(499, ATTEMPT_CLIENT_CLOSED)
        self.status_code, self.error_type, self.error_code = 499, ATTEMPT_CLIENT_CLOSED, CLIENT_CLOSED_CODE

    def failed(self, error: ProxyError) -> None:
        """The request ends with `error` (rendered by the endpoint)."""
        self.status_code = error.status
        self.error_type = error.type
        self.error_code = error.code

    # ------------------------------------------------------------------------------------ readings

    @property
    def upstream_s(self) -> float:
        """Seconds spent waiting on the upstream in the last attempt (until now while it is still going)."""
        if not self.upstream_started:
            return 0.0
        return (self.upstream_ended or time.perf_counter()) - self.upstream_started

    def overhead_header(self, now: float) -> str:
        return overhead_header(self.started, self.upstream_s, now)

    def _fallback(self) -> str | None:
        """`<served route>; <why the first choice did not serve>` when a fallback route served."""
        if self.route is None or self.first_choice is None or self.route.key == self.first_choice:
            return None
        return f"{self.route.key}; {self.fallback_reason or 'fallback'}"

    def trace(self) -> TraceEvent:
        now = time.perf_counter()
        usage = self.usage or wire.Usage()
        route = self.route
        cost = pricing.cost_usd(route, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens,
                                cache_write_tokens=usage.cache_write_tokens,
                                cache_write_1h_tokens=usage.cache_write_1h_tokens) \
            if route is not None and self.usage is not None else pricing.Decimal(0)
        upstream_ms = (self.upstream_ended - self.upstream_started) * 1000 if self.upstream_started else 0.0
        return TraceEvent(
            request_id=self.request_id,
            timestamp_ms=self.started_ms,
            organization_id=self.principal.organization_id or "",
            api_key_id=self.principal.api_key_id,
            endpoint=self.endpoint,
            requested_model=self.requested_model,
            model=self.model.id if self.model else self.requested_model,
            provider=route.provider if route else "",
            upstream_model=route.upstream_model if route else "",
            route_reason=self.route_reason,
            route=self.first_choice or (route.key if route else None),
            fallback=self._fallback(),
            status_code=self.status_code,
            stream=self.stream,
            latency_ms=round((now - self.started) * 1000, 3),
            upstream_latency_ms=round(upstream_ms, 3),
            ttft_ms=round((self.first_byte - self.started) * 1000, 3) if self.first_byte else None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_usd=cost,
            error_type=self.error_type,
            error_code=self.error_code,
            attempts=tuple(self.attempts),
            usage_estimated=self.usage_estimated,
            redactions=self.redactions,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
        )
