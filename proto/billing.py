"""Billing messages (admission and settlement); the billing issue fills these out."""

from __future__ import annotations

from decimal import Decimal

import msgspec


class AdmitRequest(msgspec.Struct, frozen=True):
    request_id: str
    api_key_id: str
    organization_id: str
    model: str
    reserve_usd: Decimal
    reserve_tokens: int


class AdmitReply(msgspec.Struct, frozen=True):
    admitted: bool
    code: str | None = None
    message: str | None = None
    retry_after_s: float | None = None


class Settle(msgspec.Struct, frozen=True):
    request_id: str
    api_key_id: str
    organization_id: str
    cost_usd: Decimal
    total_tokens: int
