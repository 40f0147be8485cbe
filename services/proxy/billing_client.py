"""The proxy's side of billing: authenticate, admit with a reservation (or from a spend lease), settle in
batches in the background."""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError

from catalog import pricing
from catalog.schema import Model, Route
from proto import codec, subjects
from proto.billing import (
    AdmitReply,
    AdmitRequest,
    AuthReply,
    AuthRequest,
    LeaseReply,
    LeaseRequest,
    Settle,
    SettleBatch,
    SettleBatchReply,
    SettleReply,
)
from services.common.ids import new_ulid
from services.common.logs import get_logger
from services.common.retry_queue import SEND_TICK_S, RetryQueue
from services.proxy.errors import ProxyError, ServiceUnavailable
from services.proxy.leases import LeaseBook

log = get_logger()

_AUTH_TTL_S = 5.0
_AUTH_CACHE_MAX = 10_000


def reservation(body: dict[str, Any], raw_size: int, model: Model, route: Route) -> tuple[Decimal, int]:
    """Worst-case (USD, tokens) of a request: prompt estimated from the body size (≈ 4 bytes a token),
    output = max_tokens, else the model's output cap; priced at full input price (no cache discount)."""
    prompt = math.ceil(raw_size / 4)
    requested = body.get("max_completion_tokens") or body.get("max_tokens")
    output = min(int(requested), model.max_output_tokens) if isinstance(requested, int) else model.max_output_tokens
    return pricing.cost_usd(route, prompt_tokens=prompt, completion_tokens=output), prompt + output


class BillingRefused(ProxyError):
    """Billing said no: the status, type and code are billing's own."""

    def __init__(self, reply: AdmitReply | AuthReply) -> None:
        super().__init__(reply.message or "refused by billing", code=reply.code or "refused",
                         status=reply.status if reply.status >= 400 else 403)
        self.type = reply.type or "invalid_request_error"
        self.headers: dict[str, str] = {}
        if isinstance(reply, AdmitReply):
            self.headers = reply.rate_limits.headers()
            if reply.retry_after_s is not None:
                self.headers["Retry-After"] = str(max(1, math.ceil(reply.retry_after_s)))


class BillingClient:
    """Request/reply to the billing service; it is the one authority on keys and spend."""

    def __init__(self, nc: Client, *, timeout_s: float, fail_open_s: float = 0.0, leases: bool = True) -> None:
        self._nc = nc
        self._timeout = timeout_s
        self._fail_open_s = fail_open_s
        self._last_answer = float("-inf")
        self._auth_cache: dict[str, tuple[float, AuthReply]] = {}
        self._settles: RetryQueue[Settle] = RetryQueue(send_batch=self._send, name="billing-settler",
                                                       linger_s=SEND_TICK_S)
        self._leases = LeaseBook() if leases else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._releaser: asyncio.Task[None] | None = None
        self.leased_admissions = 0

    async def _ask(self, subject: str, message: Any) -> bytes:
        try:
            reply = await self._nc.request(subject, codec.encode(message), timeout=self._timeout)
        except (NatsError, TimeoutError):
            raise ServiceUnavailable("billing is unavailable; requests are refused until it is back",
                                     code="billing_unavailable") from None
        self._last_answer = time.monotonic()
        return reply.data  # type: ignore[no-any-return]

    async def authenticate(self, api_key: str) -> AuthReply:
        """The key's owner and limits (cached a few seconds); raises BillingRefused for a bad key."""
        now = time.monotonic()
        cached = self._auth_cache.get(api_key)
        if cached is not None and cached[0] > now:
            reply = cached[1]
        else:
            try:
                reply = codec.decode(await self._ask(subjects.BILLING_AUTH, AuthRequest(api_key=api_key)),
                                     AuthReply)
            except ServiceUnavailable:
                if cached is None or not self._in_grace(now):
                    raise
                reply = cached[1]  # billing went quiet: keep vouching for a key it recently accepted
            else:
                if len(self._auth_cache) >= _AUTH_CACHE_MAX:
                    self._auth_cache.clear()
                self._auth_cache[api_key] = (now + _AUTH_TTL_S, reply)
        if not reply.ok:
            raise BillingRefused(reply)
        return reply

    def _in_grace(self, now: float) -> bool:
        return self._fail_open_s > 0 and now - self._last_answer <= self._fail_open_s

    async def admit(self, request: AdmitRequest) -> AdmitReply:
        """Reserve the request's worst case, from the key's spend lease when it has room, else through billing;
        raises BillingRefused (402/429/401) or ServiceUnavailable."""
        book, api_key = self._leases, request.api_key
        if book is not None and api_key:
            lease = book.take(api_key, request.request_id, request.reserve_usd)
            wanted = book.wanted(api_key, request.reserve_usd)
            if wanted is not None:
                self._spawn(self._ask_lease(api_key, *wanted))
            if lease is not None:
                self.leased_admissions += 1
                return AdmitReply(admitted=True, api_key_id=lease.api_key_id, organization_id=lease.organization_id,
                                  settings=lease.settings)
        try:
            reply = codec.decode(await self._ask(subjects.BILLING_ADMIT, request), AdmitReply)
        except ServiceUnavailable:
            reply = self._fail_open(request)
        if not reply.admitted:
            raise BillingRefused(reply)
        return reply

    def _fail_open(self, request: AdmitRequest) -> AdmitReply:
        """Within the configured grace after billing's last answer, admit keys it recently vouched for
        (no reservation: the settlement is queued and applied when billing is back). Else fail closed."""
        cached = self._auth_cache.get(request.api_key or "")
        if cached is None or not cached[1].ok or not self._in_grace(time.monotonic()):
            raise ServiceUnavailable("billing is unavailable; requests are refused until it is back",
                                     code="billing_unavailable")
        log.warning("billing_fail_open", request_id=request.request_id)
        auth = cached[1]
        return AdmitReply(admitted=True, api_key_id=auth.api_key_id, organization_id=auth.organization_id,
                          settings=auth.settings)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask_lease(self, api_key: str, want_usd: Decimal, min_usd: Decimal) -> None:
        """Ask billing for a spend lease for the key (in the background: the request that asked goes on)."""
        assert self._leases is not None
        lease_id = f"lease_{new_ulid()}"
        try:
            data = await self._ask(subjects.BILLING_LEASE, LeaseRequest(lease_id=lease_id, api_key=api_key,
                                                                        want_usd=want_usd, min_usd=min_usd))
            reply = codec.decode(data, LeaseReply)
        except (ServiceUnavailable, msgspec.DecodeError):
            self._leases.declined(api_key, None)  # if it was granted, billing expires it with its TTL
            return
        if reply.granted:
            self._leases.granted(api_key, lease_id, reply)
        else:
            self._leases.declined(api_key, reply.reason)

    async def _release_leases(self) -> None:
        """Give back what is left of every lease that admits no more and whose requests are all settled."""
        assert self._leases is not None
        for lease in self._leases.releasable():
            try:
                await self._ask(subjects.BILLING_LEASE, LeaseRequest(lease_id=lease.id, release=True))
            except ServiceUnavailable:
                log.warning("lease_not_released", lease_id=lease.id)  # billing expires it with its TTL

    async def _release_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._release_leases()

    def settle(self, settle: Settle) -> None:
        """Queue a settlement; it is retried until billing confirms it (idempotent by request id)."""
        if self._leases is not None:
            lease_id = self._leases.finish(settle.request_id, settle.cost_usd)
            if lease_id is not None:
                settle = msgspec.structs.replace(settle, lease_id=lease_id)
        self._settles.submit(settle)

    @property
    def backlog(self) -> int:
        return self._settles.backlog

    @property
    def open_leases(self) -> int:
        return 0 if self._leases is None else self._leases.open

    def start(self) -> None:
        self._settles.start()
        if self._leases is not None:
            self._releaser = asyncio.get_running_loop().create_task(self._release_loop(), name="lease-releaser")

    async def _send(self, settles: list[Settle]) -> list[bool]:
        """Send a batch of settlements as one message and wait for billing's one reply; True for each one
        billing stored (or refused for good)."""
        try:
            reply = await self._nc.request(subjects.BILLING_SETTLE_BATCH, codec.encode(SettleBatch(tuple(settles))),
                                           timeout=self._timeout)
            replies = codec.decode(reply.data, SettleBatchReply).replies
        except (NatsError, TimeoutError):  # no answer in time, nobody listening: it stays queued
            return [False] * len(settles)
        except msgspec.DecodeError:
            log.error("settle_reply_undecodable", settlements=len(settles))
            return [False] * len(settles)
        if len(replies) != len(settles):
            log.error("settle_reply_mismatch", settlements=len(settles), replies=len(replies))
            return [False] * len(settles)
        self._last_answer = time.monotonic()
        results = [self._settled(settle, answer) for settle, answer in zip(settles, replies, strict=True)]
        if self._leases is not None:
            for settle, ok in zip(settles, results, strict=True):
                if ok and settle.lease_id is not None:
                    self._leases.settled(settle.lease_id)
        return results

    @staticmethod
    def _settled(settle: Settle, reply: SettleReply) -> bool:
        if not reply.ok and not reply.retryable:
            log.error("settle_rejected", request_id=settle.request_id, code=reply.code)
            return True
        return reply.ok

    async def close(self, timeout: float) -> None:
        """Deliver queued settlements (up to `timeout` seconds), release the leases, then stop."""
        if self._leases is not None:
            self._leases.retire_all()
        if self._releaser is not None:
            self._releaser.cancel()
        await self._settles.close(timeout)
        if self._leases is not None:
            await self._release_leases()
        for task in list(self._tasks):
            task.cancel()
