"""Billing bus schemas: auth/admit/settle request-reply messages and the ROUTEUR_LEDGER events."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal

import msgspec

Period = Literal["total", "day", "month"]


class KeyLimits(msgspec.Struct, frozen=True):
    """A key's spend and rate limits; None means unlimited. `max_spend_usd` applies per `period` (UTC)."""

    max_spend_usd: Decimal | None = None
    period: Period = "total"
    rate_limit_rpm: int | None = None
    token_limit_tpm: int | None = None


class KeySettings(msgspec.Struct, frozen=True):
    """Payload archive and DLP behaviour the proxy applies, set per key and per organization.

    What billing hands the proxy is the effective merge of both (`services.billing.ledger.effective_settings`).
    """

    archive_payloads: bool = False
    dlp_policy: str = "off"


# --- request/reply (core NATS) -----------------------------------------------------------------


class RateLimits(msgspec.Struct, frozen=True, omit_defaults=True):
    """Values of OpenAI's x-ratelimit-* headers after this admission; None when the key has no such limit."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    def headers(self) -> dict[str, str]:
        """The x-ratelimit-* response headers (only those whose limit is set)."""
        out: dict[str, str] = {}
        if self.limit_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests or 0)
            out["x-ratelimit-reset-requests"] = duration(self.reset_requests_s or 0.0)
        if self.limit_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens or 0)
            out["x-ratelimit-reset-tokens"] = duration(self.reset_tokens_s or 0.0)
        return out


def duration(seconds: float) -> str:
    """OpenAI's reset format (Go durations): `20ms`, `1.5s`, `6m0s`."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes}m" + (f"{rest / 1000:.3f}".rstrip("0").rstrip(".") or "0") + "s"


class AuthRequest(msgspec.Struct, frozen=True):
    """BILLING_AUTH: who owns this `rk-…` secret (for routes that spend nothing, e.g. /v1/logs)."""

    api_key: str


class AuthReply(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    api_key_id: str | None = None
    organization_id: str | None = None
    limits: KeyLimits | None = None
    settings: KeySettings | None = None
    code: str | None = None
    message: str | None = None
    status: int = 200
    type: str | None = None


class AdmitRequest(msgspec.Struct, frozen=True):
    """BILLING_ADMIT: authenticate (when `api_key` is given) and reserve worst-case cost and tokens.

    Send `api_key` (the caller's secret, as received) or `api_key_id` (already authenticated).
    Admitting the same `request_id` twice returns the first admission; it reserves once.
    """

    request_id: str
    reserve_usd: Decimal
    reserve_tokens: int = 0
    api_key: str | None = None
    api_key_id: str | None = None
    model: str = ""


class AdmitReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """Admitted, or refused with a stable `code`, the HTTP `status` and `type` the proxy should answer."""

    admitted: bool
    api_key_id: str | None = None
    organization_id: str | None = None
    settings: KeySettings | None = None
    rate_limits: RateLimits = RateLimits()
    code: str | None = None
    message: str | None = None
    status: int = 200
    type: str | None = None
    retry_after_s: float | None = None


class Settle(msgspec.Struct, frozen=True, omit_defaults=True):
    """BILLING_SETTLE: the actual cost of a request; releases its reservation. Retry until `ok`.

    `lease_id`: the request was admitted by the proxy from a spend lease (LeaseRequest) rather than by
    its own admission; its cost comes off that lease's reservation."""

    request_id: str
    api_key_id: str
    organization_id: str
    cost_usd: Decimal
    total_tokens: int = 0
    lease_id: str | None = None


class SettleReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """`ok` only once the settlement is durably in the ledger stream; `duplicate` when already settled."""

    ok: bool
    duplicate: bool = False
    code: str | None = None
    message: str | None = None
    status: int = 200
    retryable: bool = False


class SettleBatch(msgspec.Struct, frozen=True):
    """BILLING_SETTLE_BATCH: the settlements a proxy gathered in one send tick, in one message."""

    settles: tuple[Settle, ...]


class SettleBatchReply(msgspec.Struct, frozen=True):
    """One SettleReply per settlement of the batch, in the same order."""

    replies: tuple[SettleReply, ...]


class LeaseRequest(msgspec.Struct, frozen=True):
    """BILLING_LEASE: reserve a block of a key's spend that the proxy then admits requests from locally,
    with no bus round trip per request, for `LeaseReply.ttl_s` seconds.

    Billing grants a lease only to an active key without requests/tokens-per-minute limits (those are
    counted exactly, per request), and only a slice of the room left under the key's maxSpend and the
    organization's balance, so the last part of any budget is always admitted request by request.
    A lease is a reservation like any other: settlements carrying its id take their cost off it, and the
    rest is released by `release=True` (or expires with the reservation TTL if the proxy dies).
    Requests are idempotent by `lease_id`.
    """

    lease_id: str
    api_key: str | None = None
    api_key_id: str | None = None
    want_usd: Decimal = Decimal(0)
    min_usd: Decimal = Decimal(0)
    release: bool = False


class LeaseReply(msgspec.Struct, frozen=True, omit_defaults=True):
    """`granted_usd` to admit from for `ttl_s` seconds; or `granted=False` with the `reason` (the proxy then
    admits request by request, which answers every refusal with its exact code)."""

    granted: bool
    granted_usd: Decimal = Decimal(0)
    ttl_s: float = 0.0
    api_key_id: str | None = None
    organization_id: str | None = None
    settings: KeySettings | None = None
    reason: str | None = None


class KeysQuery(msgspec.Struct, frozen=True):
    """BILLING_KEYS: keys and wallets for the dashboard; `organization_id` None means every organization (admin)."""

    organization_id: str | None = None


class WalletSummary(msgspec.Struct, frozen=True):
    """An organization's wallet: `available_usd` = balance − open reservations."""

    organization_id: str
    name: str
    balance_usd: Decimal
    reserved_usd: Decimal
    available_usd: Decimal
    spent_usd: Decimal
    settings: KeySettings = KeySettings()


class KeySummary(msgspec.Struct, frozen=True):
    """A key as the dashboard shows it (never its secret nor its digest); `status` is active|disabled|revoked.

    `period_spent_usd` is the settled spend in the current `limits.period` (UTC), the figure `max_spend_usd`
    caps; `budget_remaining_usd` also subtracts open reservations (None when there is no maxSpend).
    `settings` are the key's own; `effective_settings` merge in its organization's (what the proxy applies).
    """

    api_key_id: str
    organization_id: str
    name: str
    status: str
    created_ms: int
    limits: KeyLimits
    spent_usd: Decimal
    period_spent_usd: Decimal
    period_start_ms: int | None
    budget_remaining_usd: Decimal | None
    reserved_usd: Decimal
    requests: int
    tokens: int
    settings: KeySettings = KeySettings()
    effective_settings: KeySettings = KeySettings()


class KeysReply(msgspec.Struct, frozen=True):
    """Wallets and keys, ordered by organization then key name; `truncated` when keys were left off."""

    organizations: tuple[WalletSummary, ...] = ()
    keys: tuple[KeySummary, ...] = ()
    truncated: bool = False
    error: str | None = None


# --- ROUTEUR_LEDGER events (JetStream, replayed on start) ----------------------------------------


class OrgCreated(msgspec.Struct, frozen=True, tag="org_created"):
    organization_id: str
    name: str
    ts_ms: int
    settings: KeySettings = KeySettings()


class OrgSettingsChanged(msgspec.Struct, frozen=True, tag="org_settings_changed"):
    """The organization's complete new settings (not a patch), so replay needs no earlier state."""

    update_id: str
    organization_id: str
    settings: KeySettings
    ts_ms: int


class TopUp(msgspec.Struct, frozen=True, tag="top_up"):
    topup_id: str
    organization_id: str
    amount_usd: Decimal
    ts_ms: int
    note: str = ""


class Adjustment(msgspec.Struct, frozen=True, tag="adjustment"):
    """A signed correction of an organization's wallet (refund, goodwill credit, chargeback)."""

    adjustment_id: str
    organization_id: str
    amount_usd: Decimal
    reason: str
    ts_ms: int


class KeyCreated(msgspec.Struct, frozen=True, tag="key_created"):
    """`digest` is HMAC-SHA256(server secret, key secret) in hex: the secret itself is never stored."""

    api_key_id: str
    organization_id: str
    name: str
    digest: str
    ts_ms: int
    limits: KeyLimits = KeyLimits()
    settings: KeySettings = KeySettings()


class KeyUpdated(msgspec.Struct, frozen=True, tag="key_updated"):
    """The key's complete new limits/settings (not a patch), so replay needs no earlier state."""

    update_id: str
    api_key_id: str
    ts_ms: int
    limits: KeyLimits
    settings: KeySettings
    enabled: bool
    name: str


class KeyRevoked(msgspec.Struct, frozen=True, tag="key_revoked"):
    api_key_id: str
    ts_ms: int


class Settled(msgspec.Struct, frozen=True, tag="settled", omit_defaults=True):
    request_id: str
    api_key_id: str
    organization_id: str
    cost_usd: Decimal
    total_tokens: int
    ts_ms: int
    lease_id: str | None = None  # admitted from this spend lease: the cost comes off its reservation


class SettledBatch(msgspec.Struct, frozen=True, tag="settled_batch"):
    """Several settlements stored as one stream message (billing writes a proxy's SettleBatch this way); each
    is applied like a lone Settled event, idempotent by request id."""

    settlements: tuple[Settled, ...]


LedgerEvent = (OrgCreated | OrgSettingsChanged | TopUp | Adjustment | KeyCreated | KeyUpdated | KeyRevoked | Settled
               | SettledBatch)


def settlements_in(event: LedgerEvent) -> tuple[Settled, ...]:
    """The settlements an event carries: itself if Settled, its members if SettledBatch, else none."""
    if isinstance(event, Settled):
        return (event,)
    if isinstance(event, SettledBatch):
        return event.settlements
    return ()


def event_msg_id(event: LedgerEvent) -> str:
    """The deterministic `Nats-Msg-Id` of an event: a repeated publish within the window is stored once."""
    match event:
        case Settled(request_id=request_id):
            return request_id
        case SettledBatch(settlements=members):
            digest = hashlib.sha256("\n".join(sorted(m.request_id for m in members)).encode()).hexdigest()
            return f"settled_batch:{digest[:40]}"
        case OrgCreated(organization_id=org_id):
            return f"org_created:{org_id}"
        case OrgSettingsChanged(update_id=update_id):
            return f"org_settings_changed:{update_id}"
        case TopUp(topup_id=topup_id):
            return f"top_up:{topup_id}"
        case Adjustment(adjustment_id=adjustment_id):
            return f"adjustment:{adjustment_id}"
        case KeyCreated(api_key_id=key_id):
            return f"key_created:{key_id}"
        case KeyUpdated(update_id=update_id):
            return f"key_updated:{update_id}"
        case KeyRevoked(api_key_id=key_id):
            return f"key_revoked:{key_id}"
    raise TypeError(f"not a ledger event: {type(event).__name__}")


_EVENTS: msgspec.json.Decoder[LedgerEvent] = msgspec.json.Decoder(LedgerEvent)


def decode_event(data: bytes) -> LedgerEvent:
    """One ledger event from the stream; raises msgspec.DecodeError / ValidationError on bad input."""
    return _EVENTS.decode(data)
