"""Pure read model of wallets and keys (no I/O): each figure computed once (`wallet`, `key_summary`), shaped for
the dashboard's Keys page (`keys_reply`) and for billing's admin API (`org_view`, `key_view`)."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from proto.billing import KeySettings, KeysQuery, KeysReply, KeySummary, Period, WalletSummary
from services.billing.ledger import Ledger
from services.billing.limits import period_start_ms
from services.billing.state import KeyState, OrgState

MAX_KEYS = 2000


def wallet(ledger: Ledger, org: OrgState) -> WalletSummary:
    """The organization's balance, open reservations and what is available (balance − reservations)."""
    reserved = ledger.reserved_usd(org_id=org.id)
    return WalletSummary(organization_id=org.id, name=org.name, balance_usd=org.balance_usd, reserved_usd=reserved,
                         available_usd=org.balance_usd - reserved, spent_usd=org.spent_usd, settings=org.settings)


def status(key: KeyState) -> str:
    if key.revoked_ms is not None:
        return "revoked"
    return "active" if key.enabled else "disabled"


def key_summary(ledger: Ledger, key: KeyState, now_ms: int) -> KeySummary:
    """The key's limits and its spend against them at `now_ms` (the same figures admission uses)."""
    limits = key.limits
    period_spent = key.period_spend(limits.period, now_ms)
    reserved = ledger.reserved_usd(key_id=key.id)
    remaining = (None if limits.max_spend_usd is None
                 else max(limits.max_spend_usd - period_spent - reserved, Decimal(0)))
    return KeySummary(api_key_id=key.id, organization_id=key.organization_id, name=key.name, status=status(key),
                      created_ms=key.created_ms, limits=limits, spent_usd=key.spent_usd,
                      period_spent_usd=period_spent, period_start_ms=period_start_ms(limits.period, now_ms),
                      budget_remaining_usd=remaining, reserved_usd=reserved,
                      requests=key.requests, tokens=key.tokens, settings=key.settings,
                      effective_settings=ledger.settings_for(key))


def keys_reply(ledger: Ledger, query: KeysQuery, now_ms: int) -> KeysReply:
    """Every wallet and key the query may see: one organization, or all of them (admin)."""
    wanted = query.organization_id
    orgs = [org for org in ledger.state.orgs.values() if wanted is None or org.id == wanted]
    keys = sorted((key for key in ledger.state.keys.values() if wanted is None or key.organization_id == wanted),
                  key=lambda k: (k.organization_id, k.name, k.id))
    return KeysReply(organizations=tuple(wallet(ledger, org) for org in sorted(orgs, key=lambda o: o.id)),
                     keys=tuple(key_summary(ledger, key, now_ms) for key in keys[:MAX_KEYS]),
                     truncated=len(keys) > MAX_KEYS)


class OrgView(msgspec.Struct, frozen=True):
    """An organization's wallet and its own settings (which every key of the org inherits, see KeyView)."""

    id: str
    name: str
    created_ms: int
    balance_usd: Decimal
    reserved_usd: Decimal
    available_usd: Decimal
    topped_up_usd: Decimal
    adjusted_usd: Decimal
    spent_usd: Decimal
    keys: int
    archive_payloads: bool
    dlp_policy: str


class KeyView(msgspec.Struct, frozen=True):
    """A key as the admin sees it: never its secret nor its digest.

    `archive_payloads` and `dlp_policy` are the key's own; `effective` merges in its organization's settings
    and is what the proxy applies (so an org that archives makes every key's `effective.archive_payloads` true).
    """

    id: str
    organization_id: str
    name: str
    created_ms: int
    enabled: bool
    revoked: bool
    revoked_ms: int | None
    max_spend_usd: Decimal | None
    period: Period
    rate_limit_rpm: int | None
    token_limit_tpm: int | None
    archive_payloads: bool
    dlp_policy: str
    spent_usd: Decimal
    period_spent_usd: Decimal
    period_start_ms: int | None
    budget_remaining_usd: Decimal | None
    reserved_usd: Decimal
    requests: int
    tokens: int
    effective: KeySettings


def org_view(ledger: Ledger, org: OrgState, keys: int | None = None) -> OrgView:
    """The admin API's organization: its wallet figures (`wallet`) and the totals only the admin sees."""
    summary = wallet(ledger, org)
    if keys is None:
        keys = sum(1 for key in ledger.state.keys.values() if key.organization_id == org.id)
    return OrgView(id=org.id, name=summary.name, created_ms=org.created_ms, balance_usd=summary.balance_usd,
                   reserved_usd=summary.reserved_usd, available_usd=summary.available_usd,
                   topped_up_usd=org.topped_up_usd, adjusted_usd=org.adjusted_usd, spent_usd=summary.spent_usd,
                   keys=keys, archive_payloads=summary.settings.archive_payloads,
                   dlp_policy=summary.settings.dlp_policy)


def key_view(ledger: Ledger, key: KeyState, now_ms: int) -> KeyView:
    """The admin API's key: the figures of `key_summary`, flattened, with its enabled/revoked state."""
    summary = key_summary(ledger, key, now_ms)
    limits, settings = summary.limits, summary.settings
    return KeyView(id=key.id, organization_id=key.organization_id, name=key.name, created_ms=key.created_ms,
                   enabled=key.enabled, revoked=key.revoked_ms is not None, revoked_ms=key.revoked_ms,
                   max_spend_usd=limits.max_spend_usd, period=limits.period, rate_limit_rpm=limits.rate_limit_rpm,
                   token_limit_tpm=limits.token_limit_tpm, archive_payloads=settings.archive_payloads,
                   dlp_policy=settings.dlp_policy, spent_usd=summary.spent_usd,
                   period_spent_usd=summary.period_spent_usd, period_start_ms=summary.period_start_ms,
                   budget_remaining_usd=summary.budget_remaining_usd, reserved_usd=summary.reserved_usd,
                   requests=summary.requests, tokens=summary.tokens, effective=summary.effective_settings)
