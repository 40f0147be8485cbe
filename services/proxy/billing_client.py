"""The proxy's side of billing: authenticate, admit with a reservation, settle in the background."""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from catalog import pricing
from catalog.schema import Model, Route
from proto import codec, subjects
from proto.billing import AdmitReply, AdmitRequest, AuthReply, AuthRequest, Settle, SettleReply
from services.common.logs import get_logger
from services.common.retry_queue import SEND_TICK_S, RetryQueue
from services.proxy.errors import ProxyError, ServiceUnavailable

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

    def __init__(self, nc: Client, *, timeout_s: float, fail_open_s: float = 0.0) -> None:
        self._nc = nc
        self._timeout = timeout_s
        self._fail_open_s = fail_open_s
        self._last_answer = float("-inf")
        self._auth_cache: dict[str, tuple[float, AuthReply]] = {}
        self._settles: RetryQueue[Settle] = RetryQueue(send_batch=self._send, name="billing-settler",
                                                       linger_s=SEND_TICK_S)
        self._replies: dict[str, asyncio.Future[bytes | None]] = {}  # settlement replies by inbox token
        self._inbox: str | None = None
        self._sent = 0

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
        """Reserve the request's worst case; raises BillingRefused (402/429/401) or ServiceUnavailable."""
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

    def settle(self, settle: Settle) -> None:
        """Queue a settlement; it is retried until billing confirms it (idempotent by request id)."""
        self._settles.submit(settle)

    @property
    def backlog(self) -> int:
        return self._settles.backlog

    def start(self) -> None:
        self._settles.start()

    async def _send(self, settles: list[Settle]) -> list[bool]:
        """Send a batch of settlements back to back (one socket write) and wait for their replies together;
        True for each one billing stored (or refused for good)."""
        if self._inbox is None:
            inbox = self._nc.new_inbox()
            await self._nc.subscribe(f"{inbox}.*", cb=self._on_reply)
            self._inbox = inbox
        loop = asyncio.get_running_loop()
        waiting: list[tuple[str, asyncio.Future[bytes | None]]] = []
        for settle in settles:
            self._sent += 1
            token = str(self._sent)
            reply: asyncio.Future[bytes | None] = loop.create_future()
            self._replies[token] = reply
            waiting.append((token, reply))
            try:
                await self._nc.publish(subjects.BILLING_SETTLE, codec.encode(settle), reply=f"{self._inbox}.{token}")
            except Exception as exc:  # disconnected with a full buffer: it stays queued
                log.warning("settle_not_sent", error=type(exc).__name__)
                reply.set_result(None)
        await asyncio.wait([reply for _, reply in waiting], timeout=self._timeout)
        results = []
        for settle, (token, reply) in zip(settles, waiting, strict=True):
            del self._replies[token]
            results.append(self._settled(settle, reply.result() if reply.done() else None))
            reply.cancel()
        return results

    def _settled(self, settle: Settle, data: bytes | None) -> bool:
        if data is None:  # no answer in time, or nobody listening
            return False
        self._last_answer = time.monotonic()
        try:
            reply = codec.decode(data, SettleReply)
        except msgspec.DecodeError:
            log.error("settle_reply_undecodable", request_id=settle.request_id)
            return False
        if not reply.ok and not reply.retryable:
            log.error("settle_rejected", request_id=settle.request_id, code=reply.code)
            return True
        return reply.ok

    async def _on_reply(self, msg: Msg) -> None:
        reply = self._replies.get(msg.subject.rpartition(".")[2])
        if reply is not None and not reply.done():
            # a status message instead of an answer: 503, nobody subscribes to BILLING_SETTLE
            reply.set_result(None if msg.headers and "Status" in msg.headers and not msg.data else msg.data)

    async def close(self, timeout: float) -> None:
        """Deliver queued settlements (up to `timeout` seconds), then stop."""
        await self._settles.close(timeout)
