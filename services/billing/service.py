"""Billing's NATS edge: auth, admit, settle and keys request/reply handlers, and the reservation expiry loop.

Scaling: one billing process is the authority for spend (admission is in-memory, tens of thousands
per second, so one process serves many proxies). Billing subscribes without a queue group on
purpose: two replicas sharing a subject would each hold a partial view of the reservations. To
scale out, shard organizations across replicas by subject (e.g. `routeur.billing.admit.<shard>`,
shard carried in the key secret's prefix) with one ledger stream subject per shard.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from proto import codec, subjects
from proto.billing import (
    AdmitReply,
    AdmitRequest,
    AuthReply,
    AuthRequest,
    KeysQuery,
    KeysReply,
    LeaseReply,
    LeaseRequest,
    Settle,
    SettleBatch,
    SettleBatchReply,
    Settled,
    SettledBatch,
    SettleReply,
)
from services.billing import errors, overview
from services.billing.inflight import InFlight
from services.billing.ledger import Ledger
from services.billing.metrics import BillingMetrics
from services.billing.store import LedgerStore
from services.common.logs import get_logger

log = get_logger()

_AUTH = msgspec.json.Decoder(AuthRequest)
_ADMIT = msgspec.json.Decoder(AdmitRequest)
_SETTLE = msgspec.json.Decoder(Settle)
_SETTLE_BATCH = msgspec.json.Decoder(SettleBatch)
_LEASE = msgspec.json.Decoder(LeaseRequest)
_KEYS = msgspec.json.Decoder(KeysQuery)


class Billing:
    """Owns the subscriptions; every decision is the ledger's, every write goes through the store."""

    def __init__(self, nc: Client, store: LedgerStore, *, expire_interval_s: float = 1.0) -> None:
        self._nc = nc
        self.store = store
        self.ledger: Ledger = store.ledger
        self._expire_interval_s = expire_interval_s
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        self.admits = 0
        self.settles = 0
        self._inflight = InFlight()  # settlements being written: a concurrent retry waits for the outcome
        self.metrics = BillingMetrics(lambda: self.ledger.open_reservations)

    async def start(self) -> None:
        self._subs.append(await self._nc.subscribe(subjects.BILLING_AUTH, cb=self._on_auth))
        self._subs.append(await self._nc.subscribe(subjects.BILLING_ADMIT, cb=self._on_admit))
        self._subs.append(await self._nc.subscribe(subjects.BILLING_SETTLE, cb=self._on_settle))
        self._subs.append(await self._nc.subscribe(subjects.BILLING_SETTLE_BATCH, cb=self._on_settle))
        self._subs.append(await self._nc.subscribe(subjects.BILLING_LEASE, cb=self._on_lease))
        self._subs.append(await self._nc.subscribe(subjects.BILLING_KEYS, cb=self._on_keys))
        self._expiry = asyncio.create_task(self._expire_loop(), name="reservation-expiry")

    async def stop(self) -> None:
        """Stop taking requests, finish the settlements in flight, stop the expiry loop."""
        for sub in self._subs:
            await sub.drain()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(self._expire_interval_s)
            expired = self.ledger.expire(time.time())
            if expired:
                log.info("reservations_expired", count=expired)

    async def _on_auth(self, msg: Msg) -> None:
        try:
            request = _AUTH.decode(msg.data)
            key = self.ledger.authenticate(request.api_key)
            if key is None:
                reply = _auth_error(errors.AuthError("invalid API key"))
            else:
                reply = AuthReply(ok=True, api_key_id=key.id, organization_id=key.organization_id,
                                  limits=key.limits, settings=self.ledger.settings_for(key))
        except (msgspec.DecodeError, UnicodeError) as exc:
            reply = _auth_error(errors.InvalidRequest(f"bad auth request: {exc}"))
        await _respond(msg, reply)

    async def _on_keys(self, msg: Msg) -> None:
        """The dashboard's Keys page: wallets and keys with limits and spend (read-only)."""
        try:
            reply = overview.keys_reply(self.ledger, _KEYS.decode(msg.data), int(time.time() * 1000))
        except (msgspec.DecodeError, UnicodeError) as exc:
            reply = KeysReply(error=f"bad keys query: {exc}")
        except Exception as exc:  # a bug must answer rather than kill the subscriber
            log.exception("keys_query_failed", error=type(exc).__name__)
            reply = KeysReply(error="billing failed to list keys; see its log")
        await _respond(msg, reply)

    async def _on_admit(self, msg: Msg) -> None:
        """The hot path: decode, one HMAC, dict lookups and Decimal arithmetic, respond. No awaits but the reply."""
        try:
            request = _ADMIT.decode(msg.data)
            key_ref = self.ledger.digest(request.api_key) if request.api_key else request.api_key_id
            if not key_ref:
                reply = AdmitReply(admitted=False, code=errors.INVALID_API_KEY, status=401,
                                   type="invalid_request_error", message="missing API key")
            else:
                reply = self.ledger.admit(key_ref, request.request_id, request.reserve_usd, request.reserve_tokens,
                                          time.time())
        except (msgspec.DecodeError, UnicodeError) as exc:
            reply = AdmitReply(admitted=False, code=errors.INVALID_REQUEST, status=400,
                               type="invalid_request_error", message=f"bad admit request: {exc}")
        except Exception as exc:  # a bug must answer (the proxy fails closed) rather than kill the subscriber
            log.exception("admit_failed", error=type(exc).__name__)
            reply = AdmitReply(admitted=False, code="internal_error", status=500, type="server_error",
                               message="billing failed to decide; see its log")
        self.admits += 1
        if reply.admitted:
            self.metrics.admissions.inc()
        else:
            self.metrics.refusals.labels(reply.code or "unknown").inc()
        await _respond(msg, reply)

    async def _on_settle(self, msg: Msg) -> None:
        """Settlements wait on JetStream, so each runs as its own task: they pipeline instead of queueing."""
        task = asyncio.create_task(self._settle(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, msg: Msg) -> None:
        decoder = _SETTLE_BATCH if msg.subject == subjects.BILLING_SETTLE_BATCH else _SETTLE
        try:
            request: Settle | SettleBatch = decoder.decode(msg.data)
        except (msgspec.DecodeError, UnicodeError) as exc:
            await _respond(msg, SettleReply(ok=False, code=errors.INVALID_REQUEST, status=400,
                                            message=f"bad settle: {exc}"))
            return
        if isinstance(request, SettleBatch):
            await _respond(msg, SettleBatchReply(replies=tuple(await self._settle_batch(request.settles))))
        else:
            await _respond(msg, await self._settle_one(request))

    async def _settle_batch(self, settles: tuple[Settle, ...]) -> list[SettleReply]:
        """A proxy's batch: the new settlements are stored as one SettledBatch stream message (one JetStream
        write and ack for the lot); already settled ones answer duplicate; invalid ones are refused alone."""
        if len(settles) == 1:
            return [await self._settle_one(settles[0])]
        replies: list[SettleReply | None] = [None] * len(settles)
        try:
            await self._inflight.settle((request.request_id for request in settles), self.store.settled_view)
        except errors.BillingError as exc:
            return [_settle_error(exc)] * len(settles)
        now_ms = int(time.time() * 1000)
        new: dict[str, tuple[int, Settled]] = {}
        for index, request in enumerate(settles):
            try:
                event = self.ledger.settlement(request.request_id, request.cost_usd, request.total_tokens,
                                               now_ms=now_ms, api_key_id=request.api_key_id,
                                               organization_id=request.organization_id, lease_id=request.lease_id)
            except errors.BillingError as exc:
                replies[index] = _settle_error(exc)
                continue
            if event is None or event.request_id in new:  # settled before, or twice in this batch
                replies[index] = SettleReply(ok=True, duplicate=True)
            else:
                new[event.request_id] = (index, event)
        if new:
            members = tuple(event for _, event in new.values())
            try:
                with self._inflight.writing(new):
                    await self.store.append(members[0] if len(members) == 1 else SettledBatch(members))
            except errors.BillingError as exc:
                for index, _ in new.values():
                    replies[index] = _settle_error(exc)
            else:
                self.settles += len(members)
                self.metrics.settlements.inc(len(members))
                for index, _ in new.values():
                    replies[index] = SettleReply(ok=True)
        return [reply or SettleReply(ok=False, code="internal_error", status=500, retryable=True)
                for reply in replies]

    async def _settle_one(self, request: Settle) -> SettleReply:
        """Store one settlement in the ledger stream; the reply says whether to retry it."""
        try:
            await self._inflight.settle((request.request_id,), self.store.settled_view)
            event = self.ledger.settlement(request.request_id, request.cost_usd, request.total_tokens,
                                           now_ms=int(time.time() * 1000), api_key_id=request.api_key_id,
                                           organization_id=request.organization_id, lease_id=request.lease_id)
            if event is None:
                duplicate = True
            else:
                with self._inflight.writing((event.request_id,)):
                    duplicate = await self.store.append(event)
            self.settles += 1
            self.metrics.settlements.inc()
            return SettleReply(ok=True, duplicate=duplicate)
        except errors.BillingError as exc:
            return _settle_error(exc)
        except Exception as exc:  # a bug: answer retryable so the proxy keeps the settlement
            log.exception("settle_failed", error=type(exc).__name__)
            return SettleReply(ok=False, code="internal_error", status=500, message="billing failed to settle",
                               retryable=True)

    async def _on_lease(self, msg: Msg) -> None:
        """Grant or release a spend lease (in memory, like every reservation)."""
        try:
            request = _LEASE.decode(msg.data)
            if request.release:
                released = self.ledger.release_lease(request.lease_id)
                reply = LeaseReply(granted=False, reason="released" if released else "unknown")
            else:
                key_ref = self.ledger.digest(request.api_key) if request.api_key else request.api_key_id
                reply = self.ledger.lease(key_ref or "", request.lease_id, request.want_usd, request.min_usd,
                                          time.time())
        except (msgspec.DecodeError, UnicodeError):
            reply = LeaseReply(granted=False, reason="invalid")
        except Exception as exc:  # a bug must answer (the proxy then admits per request) rather than kill
            log.exception("lease_failed", error=type(exc).__name__)
            reply = LeaseReply(granted=False, reason="error")
        if reply.granted:
            self.metrics.leases.inc()
        await _respond(msg, reply)


def _settle_error(exc: errors.BillingError) -> SettleReply:
    """A settlement billing did not store: retryable when the ledger was unavailable (5xx), final otherwise."""
    if exc.status >= 500:
        log.warning("settle_not_stored", code=exc.code)
    return SettleReply(ok=False, code=exc.code, status=exc.status, message=exc.message, retryable=exc.status >= 500)


def _auth_error(error: errors.BillingError) -> AuthReply:
    return AuthReply(ok=False, code=error.code, message=error.message, status=error.status, type=error.type)


async def _respond(msg: Msg, reply: Any) -> None:
    if msg.reply:
        try:
            await msg.respond(codec.encode(reply))
        except Exception as exc:  # connection lost mid-reply: the requester times out and retries
            log.warning("reply_failed", error=type(exc).__name__)
