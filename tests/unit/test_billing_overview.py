"""Billing's read model: the admin API's organization and key views show the dashboard's figures (computed once)."""

from __future__ import annotations

from decimal import Decimal

from proto.billing import KeyLimits, KeySettings, KeysQuery
from services.billing import overview
from services.billing.ledger import Ledger
from services.billing.limits import period_start_ms

SECRET = b"unit-test-server-secret-0123456789abcdef"
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
D = Decimal


def _ledger() -> tuple[Ledger, str]:
    """org_a with $10, a key capped at $2 a day that has spent $0.5 today and holds a $0.25 reservation."""
    ledger = Ledger(key_secret=SECRET)
    assert ledger.apply(ledger.create_org(now_ms=T0_MS, org_id="org_a", name="A",
                                          settings=KeySettings(archive_payloads=True)))
    topped_up = ledger.top_up("org_a", D("10"), now_ms=T0_MS)
    assert topped_up is not None and ledger.apply(topped_up)
    created, _ = ledger.create_key("org_a", now_ms=T0_MS, name="k",
                                   limits=KeyLimits(max_spend_usd=D("2"), period="daily", rate_limit_rpm=60))
    assert ledger.apply(created)
    settled = ledger.settlement("r1", D("0.5"), 10, now_ms=T0_MS + 1000, api_key_id=created.api_key_id)
    assert settled is not None and ledger.apply(settled)
    assert ledger.admit(created.api_key_id, "r2", D("0.25"), 0, (T0_MS + 2000) / 1000).admitted
    return ledger, created.api_key_id


def test_org_view_shows_the_wallet_figures() -> None:
    ledger, _ = _ledger()
    org = ledger.org("org_a")
    view, wallet = overview.org_view(ledger, org), overview.wallet(ledger, org)
    assert (view.balance_usd, view.reserved_usd, view.available_usd, view.spent_usd) == \
           (D("9.5"), D("0.25"), D("9.25"), D("0.5"))
    assert (wallet.balance_usd, wallet.reserved_usd, wallet.available_usd, wallet.spent_usd) == \
           (view.balance_usd, view.reserved_usd, view.available_usd, view.spent_usd)
    assert (view.topped_up_usd, view.keys, view.archive_payloads, view.dlp_policy) == (D("10"), 1, True, "off")
    assert overview.org_view(ledger, org, keys=7).keys == 7  # the list route passes its own count


def test_key_view_shows_the_key_summary_figures() -> None:
    ledger, key_id = _ledger()
    key = ledger.key(key_id)
    assert key is not None
    now_ms = T0_MS + 3000
    view = overview.key_view(ledger, key, now_ms)
    (summary,) = overview.keys_reply(ledger, KeysQuery("org_a"), now_ms).keys
    assert (view.period_spent_usd, view.reserved_usd, view.budget_remaining_usd) == (D("0.5"), D("0.25"), D("1.25"))
    assert view.period_start_ms == summary.period_start_ms == period_start_ms("daily", now_ms) == T0_MS
    assert (view.spent_usd, view.period_spent_usd, view.reserved_usd, view.budget_remaining_usd,
            view.requests, view.tokens) == (summary.spent_usd, summary.period_spent_usd, summary.reserved_usd,
                                            summary.budget_remaining_usd, summary.requests, summary.tokens)
    assert (view.max_spend_usd, view.period, view.rate_limit_rpm) == (D("2"), "daily", 60)
    assert view.effective == summary.effective_settings == KeySettings(archive_payloads=True)
    assert (view.enabled, view.revoked, view.revoked_ms) == (True, False, None) and summary.status == "active"
