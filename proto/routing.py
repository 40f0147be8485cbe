"""Router messages: attempt outcomes from proxies, the routing rules, and the snapshot proxies route by."""

from __future__ import annotations

import msgspec

# Breaker states, as published in RouteHealth.state.
CLOSED = "closed"
HALF_OPEN = "half_open"
OPEN = "open"


# AttemptReport.error_type / Attempt.error_type: what went wrong with one upstream attempt. Any other value
# is the class name of the connection error that ended it (a connect failure).
ATTEMPT_TIMEOUT = "timeout"  # no answer within the route's timeout
ATTEMPT_HTTP_ERROR = "http_error"  # the provider answered with an error status
ATTEMPT_CLIENT_CLOSED = "client_closed"  # the caller hung up (says nothing about the route)
ATTEMPT_UPSTREAM_STREAM_ERROR = "upstream_stream_error"  # the provider sent an error event mid-stream
ATTEMPT_STREAM_INTERRUPTED = "stream_interrupted"  # the provider's stream ended early
ATTEMPT_NOT_CONNECT = frozenset({ATTEMPT_TIMEOUT, ATTEMPT_HTTP_ERROR, ATTEMPT_CLIENT_CLOSED,
                                 ATTEMPT_UPSTREAM_STREAM_ERROR, ATTEMPT_STREAM_INTERRUPTED})

# Fallback reasons (Attempt.retry_reason in traces, router metrics): why the next route was tried.
RETRY_TIMEOUT = "timeout"
RETRY_RATE_LIMITED = "rate_limited"
RETRY_CONNECT_ERROR = "connect_error"
RETRY_ERROR_PREFIX = "error:"  # followed by the status code


class AttemptReport(msgspec.Struct, frozen=True):
    """One upstream attempt, published by a proxy inside an AttemptBatch on ROUTER_ATTEMPTS_BATCH (proxies
    before batching published each one alone on ROUTER_ATTEMPTS; the router still accepts that).

    `status_code` is the upstream's status, or the proxy's stand-in when there was none (502 connect
    error, 504 timeout, 499 caller gone); `error_type` is `timeout`, a connection error class name,
    `http_error`, `client_closed`… or None. `timestamp_ms` is when the attempt *started* (unix ms): the
    router uses it to ignore stale outcomes of attempts started before a breaker changed state.
    """

    provider: str
    upstream_model: str
    status_code: int
    latency_ms: float
    ttft_ms: float | None = None
    error_type: str | None = None
    timestamp_ms: int = 0

    @property
    def route(self) -> str:
        return f"{self.provider}/{self.upstream_model}"


class AttemptBatch(msgspec.Struct, frozen=True):
    """The attempt reports a proxy queued during one send tick, published as one message on
    ROUTER_ATTEMPTS_BATCH (fire and forget) instead of one ROUTER_ATTEMPTS message per attempt.

    `reports` are in the order the proxy queued them; the router handles each exactly as a single report.
    A proxy splits a tick's reports over several batches when one would be too large (see
    services/router/client.py: at most 2,000 reports or about 512 KiB each). An empty batch is valid (and
    means nothing); a message without `reports` is malformed. New fields get defaults (schema evolution).
    """

    reports: tuple[AttemptReport, ...]


class RouteHealth(msgspec.Struct, frozen=True):
    """One route's breaker and observations at publish time (routes never reported are absent = closed)."""

    route: str
    state: str = CLOSED
    retry_in_s: float = 0.0  # open: seconds (from published_at) until it turns half-open
    open_until: float = 0.0  # open: the router's unix time it turns half-open; identifies the open period
    opens: int = 0  # consecutive openings without a lasting recovery (the cool-down exponent)
    requests: int = 0  # outcomes in the sliding window
    failures: int = 0
    latency_ms: float | None = None  # EWMA of TTFT (or full latency when not streamed); None: no recent sample


class WeightedRoute(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    route: str  # "provider/upstream_model"
    weight: float = 1.0


class Match(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Conditions of a rule; all given ones must hold (an empty match matches everything)."""

    model: str | None = None  # requested model: exact id, "auto", or a glob ("gpt-*")
    api_key_id: str | tuple[str, ...] | None = None
    organization_id: str | tuple[str, ...] | None = None
    tags: dict[str, str] | None = None  # every pair must be in the Routeur-Tags header
    min_prompt_tokens: int | None = None  # inclusive
    max_prompt_tokens: int | None = None  # inclusive
    has_tools: bool | None = None
    has_images: bool | None = None


class Action(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exactly one of `model`, `routes` or `strategy` (with optional `among`)."""

    model: str | None = None
    routes: tuple[str | WeightedRoute, ...] | None = None  # ordered; weighted when any entry has a weight
    strategy: str | None = None  # cheapest | fastest | balanced
    among: tuple[str, ...] | None = None  # model ids the strategy chooses among (default: the requested model)
    cross_family: bool = False  # allow routes of several model families (fallback may then cross them)


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    action: Action
    match: Match = Match()


class RuleSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The rules file, validated: first matching rule wins; `default_model` is what `auto` means otherwise."""

    default_model: str | None = None
    rules: tuple[Rule, ...] = ()


class HealthSnapshot(msgspec.Struct, frozen=True):
    """Everything a proxy needs to route locally; published on ROUTER_SNAPSHOT and kept in the KV bucket.

    `version` grows with every change of content (it continues across router restarts through the KV);
    the same version re-published is a heartbeat. New fields get defaults (schema evolution).
    """

    version: int
    routes: tuple[RouteHealth, ...] = ()
    published_at: float = 0.0  # router unix time
    router_id: str = ""  # one per router process start
    rules: RuleSet = RuleSet()
    rules_digest: str = ""  # sha256 prefix of the rules file in force ("" when none)
    rules_error: str | None = None  # the last reload was rejected (the rules above are the last good ones)
    probe_timeout_s: float = 30.0  # a half-open probe not reported within this may be repeated
    publish_interval_s: float = 1.0  # heartbeat period: a proxy hearing nothing for 3 periods calls it stale
