"""Pure read model for the dashboard's Keys page: wallets and keys with limits and spend (no I/O)."""

from __future__ import annotations

from decimal import Decimal

from proto.billing import KeysQuery, KeysReply, KeySummary, WalletSummary
from services.billing.ledger import Ledger
from services.billing.limits import period_start_ms
from services.billing.state import KeyState, OrgState

MAX_KEYS = 2000


def wallet(ledger: Ledger, org: OrgState) -> WalletSummary:
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
