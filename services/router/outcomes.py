"""What an attempt's status means: a route failure (and the fallback reason) or not; retry back-off."""

from __future__ import annotations

import random
from collections.abc import Callable

from proto import routing


def retry_reason(status_code: int, error_type: str | None) -> str | None:
    """The fallback reason for a failed attempt (`timeout`, `rate_limited`, `connect_error`, `error:<status>`),
    or None when the outcome is not the route's fault (2xx, the caller's 4xx, the caller hanging up)."""
    if error_type == routing.ATTEMPT_TIMEOUT:
        return routing.RETRY_TIMEOUT
    if status_code == 429:
        return routing.RETRY_RATE_LIMITED
    if error_type is not None and error_type not in routing.ATTEMPT_NOT_CONNECT and status_code >= 500:
        return routing.RETRY_CONNECT_ERROR
    if status_code >= 500 or status_code == 408:
        return f"{routing.RETRY_ERROR_PREFIX}{status_code}"
    return None


def counts_for_health(status_code: int, error_type: str | None) -> bool:
    """False for outcomes that say nothing about the route (the caller closed the connection)."""
    return status_code != 499 and error_type != routing.ATTEMPT_CLIENT_CLOSED


def backoff_s(retry: int, *, base_s: float = 0.05, cap_s: float = 0.5,
              rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential back-off before retry number `retry` (1 = the first retry)."""
    return rand() * min(cap_s, base_s * 2 ** max(retry - 1, 0))
