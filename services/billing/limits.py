"""Pure limit maths: the 60 s sliding request/token window per key and UTC day/month spend periods."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from proto.billing import Period, RateLimits

WINDOW_S = 60.0
_DAY_MS = 86_400_000


def day_of(ts_ms: int) -> int:
    """Days since the epoch (UTC) of a millisecond timestamp."""
    return ts_ms // _DAY_MS


def month_of(ts_ms: int) -> int:
    """Months since year 0 (UTC): year × 12 + month − 1."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.year * 12 + moment.month - 1


def period_start_ms(period: Period, ts_ms: int) -> int | None:
    """When the spend period containing `ts_ms` began (None for `total`)."""
    if period == "total":
        return None
    if period == "day":
        return day_of(ts_ms) * _DAY_MS
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp() * 1000)


class WindowEntry:
    """One admitted request in a window: its time and its tokens (reserved, then actual once settled)."""

    __slots__ = ("live", "tokens", "ts")

    def __init__(self, ts: float, tokens: int) -> None:
        self.ts = ts
        self.tokens = tokens
        self.live = True


class RateWindow:
    """A sliding 60 s log of admitted requests: exact RPM and TPM counts, no fixed-window bursts."""

    __slots__ = ("entries", "tokens")

    def __init__(self) -> None:
        self.entries: deque[WindowEntry] = deque()
        self.tokens = 0

    def prune(self, now: float) -> None:
        """Drop entries that are 60 s old or older."""
        cutoff = now - WINDOW_S
        entries = self.entries
        while entries and entries[0].ts <= cutoff:
            entry = entries.popleft()
            entry.live = False
            self.tokens -= entry.tokens

    def add(self, now: float, tokens: int) -> WindowEntry:
        entry = WindowEntry(now, tokens)
        self.entries.append(entry)
        self.tokens += tokens
        return entry

    def correct(self, entry: WindowEntry, actual_tokens: int) -> None:
        """Replace an entry's reserved tokens by the tokens actually used (if it is still in the window)."""
        if entry.live:
            self.tokens += actual_tokens - entry.tokens
        entry.tokens = actual_tokens

    def refusal(self, now: float, rpm: int | None, tpm: int | None,
                tokens: int) -> tuple[str, str, float | None] | None:
        """None when one more request of `tokens` fits; else ("requests" | "tokens", message, retry_after_s),
        retry_after_s None when the request can never fit."""
        if rpm is not None and len(self.entries) + 1 > rpm:
            retry = self.entries[0].ts + WINDOW_S - now if self.entries else WINDOW_S
            return "requests", f"rate limit reached: {rpm} requests per minute", max(retry, 0.001)
        if tpm is not None:
            if tokens > tpm:
                return ("tokens", f"request too large: it needs {tokens} tokens and the key allows {tpm} tokens "
                        "per minute", None)
            if self.tokens + tokens > tpm:
                freed = 0
                retry = WINDOW_S
                for entry in self.entries:
                    freed += entry.tokens
                    if self.tokens - freed + tokens <= tpm:
                        retry = entry.ts + WINDOW_S - now
                        break
                return "tokens", f"rate limit reached: {tpm} tokens per minute", max(retry, 0.001)
        return None

    def headers(self, now: float, rpm: int | None, tpm: int | None) -> RateLimits:
        """x-ratelimit-* values: remaining capacity and the time until the window is empty again."""
        reset = max(self.entries[-1].ts + WINDOW_S - now, 0.0) if self.entries else 0.0
        return RateLimits(
            limit_requests=rpm,
            remaining_requests=None if rpm is None else max(rpm - len(self.entries), 0),
            reset_requests_s=None if rpm is None else round(reset, 3),
            limit_tokens=tpm,
            remaining_tokens=None if tpm is None else max(tpm - self.tokens, 0),
            reset_tokens_s=None if tpm is None else round(reset if self.tokens else 0.0, 3),
        )
