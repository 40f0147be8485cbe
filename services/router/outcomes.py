"""What an attempt's status means: a route failure (and the fallback reason) or not; retry back-off."""

from __future__ import annotations

import random
from collections.abc import Callable

# error_type values the proxy records that are not connection failures
_NOT_CONNECT = frozenset({"http_error", "timeout", "client_closed", "upstream_stream_error", "stream_interrupted"})


def retry_reason(status_code: int, error_type: str | None) -> str | None:
    """The fallback reason for a failed attempt (`timeout`, `rate_limited`, `connect_error`, `error:<status>`),
    or None when the outcome is not the route's fault (2xx, the caller's 4xx, the caller hanging up)."""
    if error_type == "timeout":
        return "timeout"
    if status_code == 429:
        return "rate_limited"
    if error_type is not None and error_type not in _NOT_CONNECT and status_code >= 500:
        return "connect_error"
    if status_code >= 500 or status_code == 408:
        return f"error:{status_code}"
    return None


def counts_for_health(status_code: int, error_type: str | None) -> bool:
    """False for outcomes that say nothing about the route (the caller closed the connection)."""
    return status_code != 499 and error_type != "client_closed"


def backoff_s(retry: int, *, base_s: float = 0.05, cap_s: float = 0.5,
              rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential back-off before retry number `retry` (1 = the first retry)."""
    return rand() * min(cap_s, base_s * 2 ** max(retry - 1, 0))
