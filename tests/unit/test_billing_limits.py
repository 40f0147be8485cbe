"""RPM/TPM sliding windows with retry_after and x-ratelimit-* values, and the UTC period maths."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proto.billing import KeyLimits, RateLimits, duration
from services.billing.ledger import Ledger
from services.billing.limits import day_of, month_of, period_start_ms

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _ledger(**limits: object) -> tuple[Ledger, str]:
    ledger = Ledger(key_secret=b"s" * 32)
    ms = int(T0 * 1000)
    ledger.apply(ledger.create_org(now_ms=ms, org_id="org_a"))
    top_up = ledger.top_up("org_a", Decimal(100), now_ms=ms)
    assert top_up is not None
    ledger.apply(top_up)
    event, _ = ledger.create_key("org_a", now_ms=ms, limits=KeyLimits(**limits))  # type: ignore[arg-type]
    ledger.apply(event)
    return ledger, event.api_key_id


def test_rpm_window_refuses_with_retry_after_until_the_oldest_request_leaves() -> None:
    ledger, key = _ledger(rate_limit_rpm=3)
    replies = [ledger.admit(key, f"r{i}", Decimal(0), 0, T0 + i * 10) for i in range(3)]
    assert [r.rate_limits.remaining_requests for r in replies] == [2, 1, 0]
    assert replies[-1].rate_limits.reset_requests_s == 60.0
    refused = ledger.admit(key, "r3", Decimal(0), 0, T0 + 25)
    assert (refused.code, refused.status, refused.type) == ("rate_limit_exceeded", 429, "requests")
    assert refused.retry_after_s == pytest.approx(35.0)
    assert refused.rate_limits.headers() == {
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "55s"}
    assert not ledger.admit(key, "r4", Decimal(0), 0, T0 + 59.999).admitted
    assert ledger.admit(key, "r5", Decimal(0), 0, T0 + 60).admitted  # the first left the window


def test_tpm_counts_reserved_then_actual_tokens() -> None:
    ledger, key = _ledger(token_limit_tpm=1000)
    assert ledger.admit(key, "a", Decimal(0), 400, T0).admitted
    second = ledger.admit(key, "b", Decimal(0), 400, T0 + 1)
    assert second.rate_limits.remaining_tokens == 200 and second.rate_limits.limit_requests is None
    refused = ledger.admit(key, "c", Decimal(0), 400, T0 + 2)
    assert refused.code == "rate_limit_exceeded" and refused.type == "tokens"
    assert refused.retry_after_s == pytest.approx(58.0)  # when "a" leaves, 400 tokens are free
    assert ledger.settle("a", Decimal(0), 100, now_ms=int(T0 * 1000) + 3000)  # it used 100, not 400
    assert ledger.admit(key, "c", Decimal(0), 400, T0 + 3).admitted
    too_big = ledger.admit(key, "d", Decimal(0), 5000, T0 + 4)
    assert too_big.code == "rate_limit_exceeded" and too_big.retry_after_s is None
    assert "request too large" in (too_big.message or "")


def test_both_limits_report_headers_and_refusals_take_no_slot() -> None:
    ledger, key = _ledger(rate_limit_rpm=2, token_limit_tpm=100)
    first = ledger.admit(key, "a", Decimal(0), 60, T0)
    headers = first.rate_limits.headers()
    assert headers["x-ratelimit-remaining-requests"] == "1" and headers["x-ratelimit-remaining-tokens"] == "40"
    assert headers["x-ratelimit-reset-tokens"] == "1m0s"
    assert not ledger.admit(key, "b", Decimal(0), 60, T0 + 1).admitted  # tokens
    assert ledger.admit(key, "c", Decimal(0), 40, T0 + 2).admitted  # the refusal used no request slot


def test_windows_of_idle_keys_are_swept() -> None:
    ledger, key = _ledger(rate_limit_rpm=5)
    assert ledger.admit(key, "a", Decimal(0), 0, T0).admitted
    ledger.expire(T0 + 120)
    assert ledger.admit(key, "b", Decimal(0), 0, T0 + 121).rate_limits.remaining_requests == 4


def test_keys_without_rate_limits_send_no_headers() -> None:
    ledger, key = _ledger()
    assert ledger.admit(key, "a", Decimal(0), 10**9, T0).rate_limits == RateLimits()
    assert RateLimits().headers() == {}


def test_durations_use_openais_format() -> None:
    assert [duration(s) for s in (0, 0.02, 1, 1.5, 59.25, 60, 360, 361.5)] == [
        "0ms", "20ms", "1s", "1.5s", "59.25s", "1m0s", "6m0s", "6m1.5s"]


def test_utc_periods() -> None:
    jan31_late = int((T0 + 30 * 86400 + 86399) * 1000)
    feb1 = jan31_late + 1000
    assert day_of(feb1) == day_of(jan31_late) + 1
    assert month_of(feb1) == month_of(jan31_late) + 1 == 2026 * 12 + 1
    assert period_start_ms("month", feb1) == feb1 and period_start_ms("day", jan31_late) == jan31_late - 86_399_000
    assert period_start_ms("total", feb1) is None


def test_settling_after_the_window_moved_on_does_not_touch_the_new_window() -> None:
    ledger, key = _ledger(token_limit_tpm=1000)
    assert ledger.admit(key, "old", Decimal(0), 400, T0).admitted
    ledger.expire(T0 + 61)  # the idle window is swept; "old" is still reserved (TTL 900 s)
    assert ledger.admit(key, "new", Decimal(0), 400, T0 + 62).rate_limits.remaining_tokens == 600
    assert ledger.settle("old", Decimal(0), 10, now_ms=int((T0 + 63) * 1000))
    assert ledger.admit(key, "next", Decimal(0), 0, T0 + 64).rate_limits.remaining_tokens == 600
