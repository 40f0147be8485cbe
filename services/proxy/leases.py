"""Spend leases, the proxy's side (pure bookkeeping, no I/O): admit a key's requests locally from a block of
spend billing reserved for this proxy, instead of one billing round trip per request.

A lease is granted for `ttl_s` seconds (BILLING_LEASE_S). Each request takes its worst-case cost from the
lease's `remaining`; when it finishes, the part it did not spend comes back and its settlement carries the
lease id, so billing moves the actual cost from the lease's reservation to spend. A lease is renewed ahead
of time (a new lease replaces it; the old one retires), and a retired or expired lease is released to
billing once every request admitted from it is settled, which frees what is left of its reservation.
Billing stays the one authority: it never grants more than a slice of the room under the key's limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

from proto.billing import KeySettings, LeaseReply

# Ask for room for this many requests like the current one (or twice what the last lease used, if more).
_WANT_REQUESTS = 64
# How long to stop asking after billing declined: a key with rate limits is admitted per request for good
# (until its limits change), a budget too close to its limit is re-checked sooner.
_DECLINED_BACKOFF_S = {"rate_limited": 10.0, "disabled": 60.0}
_DEFAULT_BACKOFF_S = 1.0
_ZERO = Decimal(0)


class Lease:
    """One granted lease and what this proxy has done with it."""

    __slots__ = ("api_key_id", "granted", "id", "inflight", "organization_id", "released", "remaining",
                 "retired", "settings", "taken", "unsettled", "use_until", "ttl_s")

    def __init__(self, lease_id: str, reply: LeaseReply, now: float) -> None:
        self.id = lease_id
        self.api_key_id = reply.api_key_id or ""
        self.organization_id = reply.organization_id or ""
        self.settings = reply.settings or KeySettings()
        self.granted = reply.granted_usd
        self.remaining = reply.granted_usd
        self.ttl_s = reply.ttl_s
        self.use_until = now + reply.ttl_s
        self.taken = _ZERO  # worst cases admitted from it, for sizing the next lease
        self.inflight = 0  # admitted, not finished
        self.unsettled = 0  # finished, settlement not yet confirmed by billing
        self.retired = False  # replaced by a newer lease: admits no more
        self.released = False

    def usable(self, now: float) -> bool:
        return not self.retired and now < self.use_until

    def done(self, now: float) -> bool:
        """Nothing more can be admitted from it and every request it admitted is settled: release it."""
        return not self.released and not self.usable(now) and self.inflight == 0 and self.unsettled == 0


class LeaseBook:
    """The leases of every key this proxy serves, by API key secret (kept in memory only, like the auth cache)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._current: dict[str, Lease] = {}
        self._open: dict[str, Lease] = {}  # not yet released, by lease id
        self._requests: dict[str, tuple[Lease, Decimal]] = {}  # admitted request id -> (lease, worst case)
        self._asking: set[str] = set()
        self._quiet_until: dict[str, float] = {}

    def take(self, api_key: str, request_id: str, usd: Decimal) -> Lease | None:
        """Admit `request_id` with worst case `usd` from the key's lease, or None (admit it through billing)."""
        lease = self._current.get(api_key)
        if lease is None or lease.remaining < usd or not lease.usable(self._clock()):
            return None
        lease.remaining -= usd
        lease.taken += usd
        lease.inflight += 1
        self._requests[request_id] = (lease, usd)
        return lease

    def wanted(self, api_key: str, usd: Decimal) -> tuple[Decimal, Decimal] | None:
        """(want, min) USD when a new lease should be asked for now (none, expiring, running low), else None.
        Marks the key as asking; call `granted` or `declined` with the answer."""
        now = self._clock()
        if api_key in self._asking or self._quiet_until.get(api_key, 0.0) > now:
            return None
        lease = self._current.get(api_key)
        if lease is not None and lease.usable(now) and now < lease.use_until - lease.ttl_s / 2 \
                and lease.remaining >= max(usd, lease.granted / 4):
            return None
        want = usd * _WANT_REQUESTS
        if lease is not None:
            want = max(want, lease.taken * 2)
        self._asking.add(api_key)
        return want, usd

    def granted(self, api_key: str, lease_id: str, reply: LeaseReply) -> Lease:
        """Install a new lease for the key; the one it replaces admits no more and is released once settled."""
        self._asking.discard(api_key)
        lease = Lease(lease_id, reply, self._clock())
        old = self._current.get(api_key)
        if old is not None:
            old.retired = True
        self._current[api_key] = lease
        self._open[lease_id] = lease
        return lease

    def declined(self, api_key: str, reason: str | None) -> None:
        """No lease (billing said why, or did not answer): admit per request and ask again later."""
        self._asking.discard(api_key)
        self._quiet_until[api_key] = self._clock() + _DECLINED_BACKOFF_S.get(reason or "", _DEFAULT_BACKOFF_S)
        if len(self._quiet_until) > 10_000:
            now = self._clock()
            self._quiet_until = {key: until for key, until in self._quiet_until.items() if until > now}

    def finish(self, request_id: str, cost_usd: Decimal) -> str | None:
        """The request is over: what it did not spend returns to its lease. The lease id to settle with, or None
        when the request was not admitted from a lease."""
        found = self._requests.pop(request_id, None)
        if found is None:
            return None
        lease, reserved = found
        lease.remaining += reserved - cost_usd
        lease.inflight -= 1
        lease.unsettled += 1
        return lease.id

    def settled(self, lease_id: str) -> None:
        """Billing confirmed a settlement that carried this lease id."""
        lease = self._open.get(lease_id)
        if lease is not None:
            lease.unsettled -= 1

    def releasable(self) -> list[Lease]:
        """Leases to release now (marked released: release each once; billing also expires them on its own)."""
        now = self._clock()
        done = [lease for lease in self._open.values() if lease.done(now)]
        for lease in done:
            lease.released = True
            del self._open[lease.id]
        if done:
            self._current = {key: lease for key, lease in self._current.items() if not lease.released}
        return done

    def retire_all(self) -> None:
        """Shutting down: admit nothing more from any lease."""
        for lease in self._open.values():
            lease.retired = True

    @property
    def open(self) -> int:
        return len(self._open)
