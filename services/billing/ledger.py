"""The pure billing core: wallets, keys, reservations and limits; commands → events, `apply(event)` → state."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from decimal import Decimal

import msgspec

from proto.billing import (
    Adjustment,
    AdmitReply,
    KeyCreated,
    KeyLimits,
    KeyRevoked,
    KeySettings,
    KeyUpdated,
    LeaseReply,
    LedgerEvent,
    OrgCreated,
    OrgSettingsChanged,
    RateLimits,
    Settled,
    SettledBatch,
    TopUp,
)
from services.billing import errors
from services.billing.limits import WINDOW_S, RateWindow, WindowEntry
from services.billing.state import KeyState, LedgerState, OrgState
from services.billing.validate import (
    MAX_AMOUNT_USD,
    SECRET_PREFIX,
    ZERO,
    KeyPatch,
    OrgPatch,
    check_limits,
    check_name,
    check_org_id,
    check_secret,
    check_settings,
    money,
    token_id,
)
from services.common.ids import new_ulid

_NO_LIMITS = KeyLimits()
_DEFAULT_SETTINGS = KeySettings()


def effective_settings(key: KeySettings, org: KeySettings) -> KeySettings:
    """What the proxy applies to a key's requests: its own settings merged with its organization's.

    Either one turning payload archiving on archives. The key's own DLP policy wins unless it is "off",
    in which case the organization's applies: leaving a key at "off" never switches off its org's policy.
    """
    archive = key.archive_payloads or org.archive_payloads
    dlp_policy = key.dlp_policy if key.dlp_policy != "off" else org.dlp_policy
    if archive == key.archive_payloads and dlp_policy == key.dlp_policy:
        return key
    return KeySettings(archive_payloads=archive, dlp_policy=dlp_policy)


class _Reservation(msgspec.Struct):
    request_id: str
    key_id: str
    org_id: str
    usd: Decimal
    tokens: int
    expires_at: float
    entry: WindowEntry | None
    lease: bool = False  # a spend lease: settlements carrying its id take their cost off `usd`


class Ledger:
    """Hot state in memory: admission is a dict lookup and Decimal arithmetic, never I/O."""

    def __init__(self, *, key_secret: bytes, reservation_ttl_s: float = 900.0,
                 settled_retention_s: float = 86_400.0, state: LedgerState | None = None,
                 lease_s: float = 1.0, lease_share: Decimal = Decimal("0.25")) -> None:
        if len(key_secret) < 32:
            raise ValueError("the key secret must be at least 32 bytes")
        self._key_secret = key_secret
        self.reservation_ttl_s = reservation_ttl_s
        self.lease_s = lease_s
        self._lease_share = lease_share
        self._settled_retention_ms = int(settled_retention_s * 1000)
        self.state = LedgerState()
        self._by_digest: dict[str, KeyState] = {}
        if state is not None:
            self.restore(state)
        self._reservations: dict[str, _Reservation] = {}
        self._key_reserved: dict[str, Decimal] = {}
        self._org_reserved: dict[str, Decimal] = {}
        self._windows: dict[str, RateWindow] = {}
        self._windows_swept = 0.0

    def restore(self, state: LedgerState) -> None:
        """Replace the persistent state (from a snapshot); open reservations are kept."""
        self.state = state
        self._by_digest = {key.digest: key for key in state.keys.values()}

    # --- keys and lookups ------------------------------------------------------------------

    def digest(self, secret: str) -> str:
        """HMAC-SHA256(server secret, key secret) in hex: the only form in which a key is kept."""
        return hmac.new(self._key_secret, secret.encode(), hashlib.sha256).hexdigest()

    def key(self, key_ref: str) -> KeyState | None:
        """A key by id (`key_…`) or by digest."""
        return self.state.keys.get(key_ref) or self._by_digest.get(key_ref)

    def authenticate(self, secret: str) -> KeyState | None:
        """The active key whose secret this is, else None.

        The lookup is by keyed digest, so its timing says nothing about any stored secret (nobody can
        aim at a digest without the server secret); the match is then confirmed in constant time.
        """
        digest = self.digest(secret)
        found = self._by_digest.get(digest)
        if found is None or not found.active or not hmac.compare_digest(found.digest, digest):
            return None
        return found

    def org(self, org_id: str) -> OrgState:
        found = self.state.orgs.get(org_id)
        if found is None:
            raise errors.NotFound(f"organization {org_id!r} does not exist", param="organization_id")
        return found

    def settings_for(self, key: KeyState) -> KeySettings:
        """The key's effective settings (its own merged with its organization's): what auth and admit return."""
        org = self.state.orgs.get(key.organization_id)
        return key.settings if org is None else effective_settings(key.settings, org.settings)

    def existing_key(self, key_id: str) -> KeyState:
        found = self.state.keys.get(key_id)
        if found is None:
            raise errors.NotFound(f"API key {key_id!r} does not exist", param="api_key_id")
        return found

    def reserved_usd(self, *, org_id: str | None = None, key_id: str | None = None) -> Decimal:
        if key_id is not None:
            return self._key_reserved.get(key_id, ZERO)
        return self._org_reserved.get(org_id or "", ZERO)

    def has_reservation(self, request_id: str) -> bool:
        return request_id in self._reservations

    @property
    def open_reservations(self) -> int:
        return len(self._reservations)

    # --- commands: validate and return the event to store (nothing changes until apply) ---------

    def create_org(self, *, now_ms: int, name: str = "", org_id: str | None = None,
                   settings: KeySettings = _DEFAULT_SETTINGS) -> OrgCreated:
        org_id = org_id or f"org_{new_ulid(now_ms)}"
        check_org_id(org_id)
        if org_id in self.state.orgs:
            raise errors.Conflict(f"organization {org_id!r} already exists", param="id")
        return OrgCreated(organization_id=org_id, name=check_name(name), ts_ms=now_ms,
                          settings=check_settings(settings))

    def update_org(self, org_id: str, patch: OrgPatch, *, now_ms: int) -> OrgSettingsChanged:
        """The organization's complete new settings after `patch`."""
        old = self.org(org_id).settings
        settings = KeySettings(
            archive_payloads=old.archive_payloads if patch.archive_payloads is msgspec.UNSET
            else patch.archive_payloads,
            dlp_policy=old.dlp_policy if patch.dlp_policy is msgspec.UNSET else patch.dlp_policy)
        return OrgSettingsChanged(update_id=new_ulid(now_ms), organization_id=org_id,
                                  settings=check_settings(settings), ts_ms=now_ms)

    def top_up(self, org_id: str, amount_usd: Decimal, *, now_ms: int, topup_id: str | None = None,
               note: str = "") -> TopUp | None:
        """A top-up event, or None when `topup_id` was already applied (a retried request)."""
        self.org(org_id)
        amount = money(amount_usd, "amount_usd", positive=True)
        topup_id = token_id(topup_id, "topup_id", now_ms)
        if f"top_up:{topup_id}" in self.state.applied:
            return None
        return TopUp(topup_id=topup_id, organization_id=org_id, amount_usd=amount, ts_ms=now_ms,
                     note=check_name(note, "note"))

    def adjust(self, org_id: str, amount_usd: Decimal, *, reason: str, now_ms: int,
               adjustment_id: str | None = None) -> Adjustment | None:
        """A signed wallet correction, or None when `adjustment_id` was already applied."""
        self.org(org_id)
        amount = money(amount_usd, "amount_usd", signed=True)
        if amount == 0:
            raise errors.InvalidRequest("amount_usd must not be 0", param="amount_usd")
        if not reason.strip():
            raise errors.InvalidRequest("an adjustment needs a reason", param="reason")
        adjustment_id = token_id(adjustment_id, "adjustment_id", now_ms)
        if f"adjustment:{adjustment_id}" in self.state.applied:
            return None
        return Adjustment(adjustment_id=adjustment_id, organization_id=org_id, amount_usd=amount,
                          reason=check_name(reason, "reason"), ts_ms=now_ms)

    def create_key(self, org_id: str, *, now_ms: int, name: str = "", limits: KeyLimits = _NO_LIMITS,
                   settings: KeySettings = _DEFAULT_SETTINGS, secret: str | None = None) -> tuple[KeyCreated, str]:
        """A new key and its secret (to show once). `secret` imports an existing `rk-…` secret (seeding)."""
        self.org(org_id)
        if secret is None:
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        else:
            check_secret(secret)
        digest = self.digest(secret)
        if digest in self._by_digest:
            raise errors.Conflict("a key with this secret already exists", param="secret")
        event = KeyCreated(api_key_id=f"key_{new_ulid(now_ms)}", organization_id=org_id, name=check_name(name),
                           digest=digest, ts_ms=now_ms, limits=check_limits(limits),
                           settings=check_settings(settings))
        return event, secret

    def update_key(self, key_id: str, patch: KeyPatch, *, now_ms: int) -> KeyUpdated:
        """The key's complete new limits and settings after `patch`."""
        key = self.existing_key(key_id)
        if key.revoked_ms is not None:
            raise errors.Conflict(f"API key {key_id!r} is revoked; create a new key", param="api_key_id")
        old, old_settings = key.limits, key.settings
        limits = KeyLimits(
            max_spend_usd=old.max_spend_usd if patch.max_spend_usd is msgspec.UNSET else patch.max_spend_usd,
            period=old.period if patch.period is msgspec.UNSET else patch.period,
            rate_limit_rpm=old.rate_limit_rpm if patch.rate_limit_rpm is msgspec.UNSET else patch.rate_limit_rpm,
            token_limit_tpm=old.token_limit_tpm if patch.token_limit_tpm is msgspec.UNSET
            else patch.token_limit_tpm)
        settings = KeySettings(
            archive_payloads=old_settings.archive_payloads if patch.archive_payloads is msgspec.UNSET
            else patch.archive_payloads,
            dlp_policy=old_settings.dlp_policy if patch.dlp_policy is msgspec.UNSET else patch.dlp_policy)
        return KeyUpdated(update_id=new_ulid(now_ms), api_key_id=key_id, ts_ms=now_ms, limits=check_limits(limits),
                          settings=check_settings(settings),
                          enabled=key.enabled if patch.enabled is msgspec.UNSET else patch.enabled,
                          name=key.name if patch.name is msgspec.UNSET else check_name(patch.name))

    def revoke_key(self, key_id: str, *, now_ms: int) -> KeyRevoked | None:
        """A revocation, or None when the key is already revoked."""
        key = self.existing_key(key_id)
        return None if key.revoked_ms is not None else KeyRevoked(api_key_id=key_id, ts_ms=now_ms)

    def settlement(self, request_id: str, cost_usd: Decimal, total_tokens: int, *, now_ms: int,
                   api_key_id: str | None = None, organization_id: str | None = None,
                   lease_id: str | None = None) -> Settled | None:
        """The Settled event for a finished request, or None if it is already settled (idempotent).

        Key and organization come from the open reservation when there is one; after a restart (no
        reservation) they come from the caller and must match an existing key.
        """
        if not request_id or len(request_id) > 128:
            raise errors.InvalidRequest("request_id must be 1–128 characters", param="request_id")
        cost = money(cost_usd, "cost_usd")
        if total_tokens < 0:
            raise errors.InvalidRequest("total_tokens must not be negative", param="total_tokens")
        if request_id in self.state.settled:
            return None
        reservation = self._reservations.get(request_id)
        if reservation is not None:
            key_id, org_id = reservation.key_id, reservation.org_id
        else:
            key = self.existing_key(api_key_id or "")
            if organization_id is not None and organization_id != key.organization_id:
                raise errors.InvalidRequest("organization_id does not own this key", param="organization_id")
            key_id, org_id = key.id, key.organization_id
        if lease_id is not None and len(lease_id) > 128:
            raise errors.InvalidRequest("lease_id must be at most 128 characters", param="lease_id")
        return Settled(request_id=request_id, api_key_id=key_id, organization_id=org_id, cost_usd=cost,
                       total_tokens=total_tokens, ts_ms=now_ms, lease_id=lease_id)

    def settle(self, request_id: str, cost_usd: Decimal, total_tokens: int, *, now_ms: int,
               api_key_id: str | None = None, organization_id: str | None = None) -> bool:
        """settlement + apply in one step (for callers with no durable store, e.g. tests). True if applied."""
        event = self.settlement(request_id, cost_usd, total_tokens, now_ms=now_ms, api_key_id=api_key_id,
                                organization_id=organization_id)
        return event is not None and self.apply(event)

    # --- admission ---------------------------------------------------------------------------

    def admit(self, key_ref: str, request_id: str, reserve_usd: Decimal, reserve_tokens: int,
              now: float) -> AdmitReply:
        """Admit and reserve, or refuse with a stable code. `key_ref` is a key id or a secret's digest."""
        key = self.key(key_ref)
        if key is None:
            return _refused(errors.INVALID_API_KEY, "invalid API key")
        if not key.active:
            return _refused(errors.INVALID_API_KEY, "this API key is revoked" if key.revoked_ms is not None
                            else "this API key is disabled")
        if not request_id or len(request_id) > 128:
            return _refused(errors.INVALID_REQUEST, "request_id must be 1–128 characters", key=key)
        limits = key.limits
        window = self._window(key, now)
        existing = self._reservations.get(request_id)
        if existing is not None or request_id in self.state.settled:
            if existing is not None and existing.key_id == key.id:
                return self._admitted(key, window, now)
            return _refused(errors.INVALID_REQUEST, "request_id was already admitted or settled", key=key)
        if not reserve_usd.is_finite() or reserve_usd < 0 or reserve_usd > MAX_AMOUNT_USD or reserve_tokens < 0:
            return _refused(errors.INVALID_REQUEST, "reserve_usd and reserve_tokens must be finite and >= 0",
                            key=key)
        if limits.max_spend_usd is not None:
            now_ms = int(now * 1000)
            committed = key.period_spend(limits.period, now_ms) + self._key_reserved.get(key.id, ZERO)
            if committed >= limits.max_spend_usd or committed + reserve_usd > limits.max_spend_usd:
                return _refused(errors.BUDGET_EXCEEDED, f"this key's spend limit of {limits.max_spend_usd} USD "
                                f"({limits.period}) is reached", key=key, window=window, now=now)
        org = self.state.orgs[key.organization_id]
        available = org.balance_usd - self._org_reserved.get(org.id, ZERO)
        if available <= 0 or available < reserve_usd:
            return _refused(errors.INSUFFICIENT_QUOTA, "the organization's prepaid balance is too low for this "
                            "request; top up the wallet", key=key, window=window, now=now)
        entry = None
        if window is not None:
            refusal = window.refusal(now, limits.rate_limit_rpm, limits.token_limit_tpm, reserve_tokens)
            if refusal is not None:
                kind, message, retry_after = refusal
                return _refused(errors.RATE_LIMIT_EXCEEDED, message, key=key, window=window, now=now, kind=kind,
                                retry_after_s=None if retry_after is None else round(retry_after, 3))
            entry = window.add(now, reserve_tokens)
        self._reservations[request_id] = _Reservation(request_id, key.id, org.id, reserve_usd, reserve_tokens,
                                                      now + self.reservation_ttl_s, entry)
        self._key_reserved[key.id] = self._key_reserved.get(key.id, ZERO) + reserve_usd
        self._org_reserved[org.id] = self._org_reserved.get(org.id, ZERO) + reserve_usd
        return self._admitted(key, window, now)

    def lease(self, key_ref: str, lease_id: str, want_usd: Decimal, min_usd: Decimal, now: float) -> LeaseReply:
        """Reserve up to `want_usd` of the key's spend for the proxy to admit from locally for `lease_s` seconds.

        Granted only to an active key without rate limits, and only when `want_usd` is at most `lease_share`
        of the room left under both the key's maxSpend and the organization's balance: the last part of a
        budget (four leases' worth) is admitted request by request, so leases never make a limit less exact
        and a proxy's lease cannot make another proxy refuse a request the budget still has room for.
        `min_usd` is the smallest lease worth having. Idempotent by `lease_id`.
        """
        key = self.key(key_ref)
        if key is None or not key.active:
            return LeaseReply(granted=False, reason="key")
        existing = self._reservations.get(lease_id)
        if existing is not None:
            if not existing.lease or existing.key_id != key.id:
                return LeaseReply(granted=False, reason="lease_id")
            return self._leased(key, existing.usd)
        if self.lease_s <= 0:
            return LeaseReply(granted=False, reason="disabled")
        limits = key.limits
        if limits.rate_limit_rpm is not None or limits.token_limit_tpm is not None:
            return LeaseReply(granted=False, reason="rate_limited")
        if (not lease_id or len(lease_id) > 128 or lease_id in self.state.settled or not want_usd.is_finite()
                or not min_usd.is_finite() or min_usd < 0 or want_usd < min_usd or want_usd > MAX_AMOUNT_USD):
            return LeaseReply(granted=False, reason="invalid")
        org = self.state.orgs[key.organization_id]
        room = org.balance_usd - self._org_reserved.get(org.id, ZERO)
        if limits.max_spend_usd is not None:
            spent = key.period_spend(limits.period, int(now * 1000)) + self._key_reserved.get(key.id, ZERO)
            room = min(room, limits.max_spend_usd - spent)
        grant = want_usd
        if grant <= 0 or grant > room * self._lease_share:
            return LeaseReply(granted=False, reason="budget")
        self._reservations[lease_id] = _Reservation(lease_id, key.id, org.id, grant, 0, now + self.reservation_ttl_s,
                                                    None, lease=True)
        self._key_reserved[key.id] = self._key_reserved.get(key.id, ZERO) + grant
        self._org_reserved[org.id] = self._org_reserved.get(org.id, ZERO) + grant
        return self._leased(key, grant)

    def _leased(self, key: KeyState, usd: Decimal) -> LeaseReply:
        return LeaseReply(granted=True, granted_usd=usd, ttl_s=self.lease_s, api_key_id=key.id,
                          organization_id=key.organization_id, settings=self.settings_for(key))

    def release_lease(self, lease_id: str) -> bool:
        """Drop what is left of a lease's reservation (its requests are all settled); True if it was open."""
        reservation = self._reservations.get(lease_id)
        if reservation is None or not reservation.lease:
            return False
        del self._reservations[lease_id]
        self._release(reservation)
        return True

    def _admitted(self, key: KeyState, window: RateWindow | None, now: float) -> AdmitReply:
        return AdmitReply(admitted=True, api_key_id=key.id, organization_id=key.organization_id,
                          settings=self.settings_for(key), rate_limits=_rate_limits(key, window, now))

    def _window(self, key: KeyState, now: float) -> RateWindow | None:
        if key.limits.rate_limit_rpm is None and key.limits.token_limit_tpm is None:
            return None
        window = self._windows.get(key.id)
        if window is None:
            window = self._windows[key.id] = RateWindow()
        window.prune(now)
        return window

    def _release(self, reservation: _Reservation) -> None:
        self._key_reserved[reservation.key_id] -= reservation.usd
        self._org_reserved[reservation.org_id] -= reservation.usd

    def _draw(self, lease_id: str, cost: Decimal) -> None:
        """A request admitted from a lease is settled: its cost moves from the lease's reservation to spend."""
        lease = self._reservations.get(lease_id)
        if lease is None or not lease.lease:
            return  # released, expired, or reserved before a restart: the spend is recorded all the same
        drawn = min(cost, lease.usd)
        lease.usd -= drawn
        self._key_reserved[lease.key_id] -= drawn
        self._org_reserved[lease.org_id] -= drawn

    def expire(self, now: float) -> int:
        """Release reservations whose TTL has passed (never settled); returns how many."""
        expired = 0
        reservations = self._reservations
        while reservations:
            request_id = next(iter(reservations))
            reservation = reservations[request_id]
            if reservation.expires_at > now:
                break
            del reservations[request_id]
            self._release(reservation)
            expired += 1
        if now - self._windows_swept >= WINDOW_S:  # forget the windows of idle keys
            self._windows_swept = now
            for window in self._windows.values():
                window.prune(now)
            for key_id in [key_id for key_id, window in self._windows.items() if not window.entries]:
                del self._windows[key_id]
        return expired

    # --- events ------------------------------------------------------------------------------

    def apply(self, event: LedgerEvent) -> bool:
        """Apply one event (live or replayed); idempotent. True when it changed the state."""
        state = self.state
        match event:
            case Settled():
                changed = self._apply_settled(event)
            case SettledBatch():
                applied = sum(self._apply_settled(member) for member in event.settlements)
                changed = applied > 0
                state.events += max(applied - 1, 0)  # `events` counts settlements, however they were stored
            case TopUp() | Adjustment():
                marker = f"top_up:{event.topup_id}" if isinstance(event, TopUp) else \
                    f"adjustment:{event.adjustment_id}"
                org = state.orgs.get(event.organization_id)
                changed = org is not None and marker not in state.applied
                if changed:
                    assert org is not None
                    state.applied[marker] = event.ts_ms
                    org.balance_usd += event.amount_usd
                    if isinstance(event, TopUp):
                        org.topped_up_usd += event.amount_usd
                    else:
                        org.adjusted_usd += event.amount_usd
            case OrgCreated():
                changed = event.organization_id not in state.orgs
                if changed:
                    state.orgs[event.organization_id] = OrgState(id=event.organization_id, name=event.name,
                                                                 created_ms=event.ts_ms, settings=event.settings)
            case OrgSettingsChanged():
                org = state.orgs.get(event.organization_id)
                changed = org is not None
                if changed:
                    assert org is not None
                    org.settings = event.settings
            case KeyCreated():
                changed = (event.api_key_id not in state.keys and event.digest not in self._by_digest
                           and event.organization_id in state.orgs)
                if changed:
                    key = KeyState(id=event.api_key_id, organization_id=event.organization_id, name=event.name,
                                   digest=event.digest, created_ms=event.ts_ms, limits=event.limits,
                                   settings=event.settings)
                    state.keys[key.id] = key
                    self._by_digest[key.digest] = key
            case KeyUpdated():
                found = state.keys.get(event.api_key_id)
                changed = found is not None and found.revoked_ms is None
                if changed:
                    assert found is not None
                    found.limits, found.settings = event.limits, event.settings
                    found.enabled, found.name = event.enabled, event.name
            case KeyRevoked():
                found = state.keys.get(event.api_key_id)
                changed = found is not None and found.revoked_ms is None
                if changed:
                    assert found is not None
                    found.revoked_ms = event.ts_ms
        if changed:
            state.events += 1
        return changed

    def _apply_settled(self, event: Settled) -> bool:
        settled = self.state.settled
        if event.request_id in settled:
            return False
        settled[event.request_id] = event.ts_ms
        horizon = event.ts_ms - self._settled_retention_ms
        while settled:
            oldest = next(iter(settled))
            if settled[oldest] >= horizon:
                break
            del settled[oldest]
        reservation = self._reservations.pop(event.request_id, None)
        if reservation is not None:
            self._release(reservation)
            window = self._windows.get(reservation.key_id)
            if window is not None and reservation.entry is not None:
                window.correct(reservation.entry, event.total_tokens)
        elif event.lease_id is not None:
            self._draw(event.lease_id, event.cost_usd)
        org = self.state.orgs.get(event.organization_id)
        if org is not None:
            org.balance_usd -= event.cost_usd
            org.spent_usd += event.cost_usd
        key = self.state.keys.get(event.api_key_id)
        if key is not None:
            key.record(event.cost_usd, event.total_tokens, event.ts_ms)
        return True


def _rate_limits(key: KeyState, window: RateWindow | None, now: float) -> RateLimits:
    if window is None:
        return RateLimits()
    return window.headers(now, key.limits.rate_limit_rpm, key.limits.token_limit_tpm)


def _refused(code: str, message: str, *, key: KeyState | None = None, window: RateWindow | None = None,
             now: float = 0.0, retry_after_s: float | None = None, kind: str | None = None) -> AdmitReply:
    status, default_kind = errors.refusal(code)
    return AdmitReply(admitted=False, code=code, message=message, status=status, type=kind or default_kind,
                      retry_after_s=retry_after_s,
                      api_key_id=None if key is None else key.id,
                      organization_id=None if key is None else key.organization_id,
                      rate_limits=RateLimits() if key is None else _rate_limits(key, window, now))
