"""The ledger's persistent state (what replay rebuilds and a snapshot holds); reservations are not in it."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from proto.billing import KeyLimits, KeySettings, Period
from services.billing.limits import day_of, month_of
from services.billing.validate import ZERO


class OrgState(msgspec.Struct):
    """An organization's wallet and its own settings (snapshots written before settings existed load as default)."""

    id: str
    name: str
    created_ms: int
    balance_usd: Decimal = ZERO
    topped_up_usd: Decimal = ZERO
    adjusted_usd: Decimal = ZERO
    spent_usd: Decimal = ZERO
    settings: KeySettings = KeySettings()


class KeyState(msgspec.Struct):
    id: str
    organization_id: str
    name: str
    digest: str
    created_ms: int
    limits: KeyLimits = KeyLimits()
    settings: KeySettings = KeySettings()
    enabled: bool = True
    revoked_ms: int | None = None
    spent_usd: Decimal = ZERO
    day: int = 0
    spent_day_usd: Decimal = ZERO
    month: int = 0
    spent_month_usd: Decimal = ZERO
    requests: int = 0
    tokens: int = 0

    @property
    def active(self) -> bool:
        return self.enabled and self.revoked_ms is None

    def record(self, cost_usd: Decimal, tokens: int, ts_ms: int) -> None:
        """Count a settled request in the lifetime, day and month totals (one dated before the current
        day or month counts only in the lifetime total, whatever order events arrive in)."""
        self.spent_usd += cost_usd
        self.requests += 1
        self.tokens += tokens
        day, month = day_of(ts_ms), month_of(ts_ms)
        if day > self.day:
            self.day, self.spent_day_usd = day, cost_usd
        elif day == self.day:
            self.spent_day_usd += cost_usd
        if month > self.month:
            self.month, self.spent_month_usd = month, cost_usd
        elif month == self.month:
            self.spent_month_usd += cost_usd

    def period_spend(self, period: Period, ts_ms: int) -> Decimal:
        """Settled spend in the period containing `ts_ms`."""
        if period == "day":
            return self.spent_day_usd if self.day == day_of(ts_ms) else ZERO
        if period == "month":
            return self.spent_month_usd if self.month == month_of(ts_ms) else ZERO
        return self.spent_usd


class LedgerState(msgspec.Struct):
    """Everything rebuilt from the stream (and what a snapshot holds); reservations are not in it."""

    orgs: dict[str, OrgState] = {}
    keys: dict[str, KeyState] = {}
    applied: dict[str, int] = {}
    settled: dict[str, int] = {}
    events: int = 0
