"""Archiver I/O: the JetStream consumer that seals and stores archives, link/fetch handlers, retention sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import structlog
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from proto import codec, subjects
from proto.payload import PayloadArchive, PayloadFetchReply, PayloadFetchRequest, PayloadLinkReply, PayloadLinkRequest
from services.archiver import envelope, errors, inbound, links, objects
from services.archiver.envelope import KeyRing
from services.archiver.errors import ArchiverError, EnvelopeError, InvalidKey, InvalidLink, ObjectNotFound
from services.archiver.links import LinkKeys
from services.archiver.metrics import ArchiverMetrics
from services.archiver.store import ObjectStore, S3Store
from services.common import sealing
from services.common.health import add_health_routes
from services.common.logs import get_logger
from services.common.metrics import add_metrics_route
from services.common.sealing import InvalidSealKey, SealingError, SealKeyRing, UnknownSealKey

log = get_logger()

# A message's put is extended with in-progress acks every HEARTBEAT_S while it runs, so ACK_WAIT_S only has
# to cover a stalled or killed archiver: its messages go to another replica (or its restart) that soon.
ACK_WAIT_S = 10.0
HEARTBEAT_S = 3.0
FETCH_WAIT_S = 1.0
MAX_RETRY_DELAY_S = 60.0
QUEUE_GROUP = "archiver"  # replicas share link/fetch requests instead of all answering each one
INVALID_LINK_MESSAGE = "payload link is invalid or has expired"
_LINK_REQUEST = msgspec.json.Decoder(PayloadLinkRequest)
_FETCH_REQUEST = msgspec.json.Decoder(PayloadFetchRequest)


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "code", "")) or type(exc).__name__


class Archiver:
    """Owns the payload consumer, the link/fetch handlers and the retention sweep; `store` does the I/O."""

    def __init__(self, *, nc: Client, js: JetStreamContext, store: ObjectStore, keys: KeyRing, link_keys: LinkKeys,
                 seal_keys: SealKeyRing, url_ttl_s: int, retention_days: int, sweep_interval_s: float, batch: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._nc = nc
        self._js = js
        self._store = store
        self._keys = keys
        self._link_keys = link_keys
        self._seal_keys = seal_keys
        self._url_ttl_s = url_ttl_s
        self._retention_days = retention_days
        self._sweep_interval_s = sweep_interval_s
        self._batch = batch
        self._clock = clock
        self._stopping = asyncio.Event()
        self._subs: list[Subscription] = []
        self._pull: JetStreamContext.PullSubscription | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.archived = 0
        self.metrics = ArchiverMetrics()

    @property
    def consuming(self) -> bool:
        return self._consumer is not None and not self._consumer.done()

    async def start(self) -> None:
        """Bind the durable consumer, answer link/fetch requests, start consuming and sweeping."""
        await self._js.add_consumer(subjects.PAYLOAD_STREAM, config=ConsumerConfig(
            name=subjects.PAYLOAD_CONSUMER, durable_name=subjects.PAYLOAD_CONSUMER,
            filter_subject=subjects.PAYLOAD_SUBJECT, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_S, max_deliver=-1, max_ack_pending=max(256, 4 * self._batch)))
        self._pull = await self._js.pull_subscribe_bind(durable=subjects.PAYLOAD_CONSUMER,
                                                        stream=subjects.PAYLOAD_STREAM)
        self._subs.append(await self._nc.subscribe(subjects.ARCHIVER_LINK, queue=QUEUE_GROUP, cb=self._on_link))
        self._subs.append(await self._nc.subscribe(subjects.ARCHIVER_FETCH, queue=QUEUE_GROUP, cb=self._on_fetch))
        await self._set_lifecycle()
        self._consumer = asyncio.create_task(self._consume(self._pull), name="payload-consumer")
        if self._retention_days > 0:
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="retention-sweep")

    async def stop(self) -> None:
        """Write and ack the batch in hand, stop answering (requests in flight finish), stop sweeping."""
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer
        for sub in self._subs:
            await sub.drain()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._pull is not None:
            await self._pull.unsubscribe()  # the durable consumer stays; only this process's inbox goes

    # ------------------------------------------------------------------------------------- consumer

    async def _consume(self, pull: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await pull.fetch(self._batch, timeout=FETCH_WAIT_S)
            except (TimeoutError, NatsTimeout):
                self.metrics.lag.set(0)
                continue
            except Exception as exc:  # NATS reconnecting: keep the loop alive, retry shortly
                log.warning("payload_fetch_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if msgs:
                self.metrics.lag.set(msgs[-1].metadata.num_pending or 0)
                await self._archive_batch(msgs)

    async def _archive_batch(self, msgs: list[Msg]) -> None:
        """Archive every message concurrently, telling JetStream they are in progress while puts run."""
        tasks = {asyncio.create_task(self._archive(msg)): msg for msg in msgs}
        pending: set[asyncio.Task[None]] = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=HEARTBEAT_S)
            for task in pending:
                try:
                    await tasks[task].in_progress()
                except Exception as exc:  # disconnected: the message comes back after ACK_WAIT_S, same object
                    log.warning("payload_heartbeat_failed", error=type(exc).__name__)

    async def _archive(self, msg: Msg) -> None:
        """Open the proxy's sealed box, seal and put one archive, then ack; nak with back-off on a store failure
        or a box sealed to a key this archiver lacks; term what never decodes or opens."""
        delivered = msg.metadata.num_delivered or 1
        if delivered > 1:
            self.metrics.redeliveries.inc()
        try:
            opened = await asyncio.to_thread(inbound.open_message, msg.data, self._seal_keys)
            archive = opened.archive
            key = objects.object_key(archive.organization_id, archive.request_id)
        except UnknownSealKey as exc:  # ARCHIVER_SEAL_KEY lacks an old key: keep the message for one that has it
            delay = min(MAX_RETRY_DELAY_S, 2.0 ** min(delivered - 1, 6))
            self.metrics.failures.labels(reason=exc.code).inc()
            log.error("payload_seal_key_unknown", kid=exc.kid, attempt=delivered, retry_in_s=delay,
                      detail="list this key id in ARCHIVER_SEAL_KEY after the active key")
            await self._settle(msg.nak, delay=delay)
            return
        except (msgspec.DecodeError, InvalidKey, SealingError) as exc:  # never archives: log sizes, not content
            log.error("payload_message_rejected", reason=_code(exc), size=len(msg.data),
                      stream_seq=msg.metadata.sequence.stream if msg.metadata.sequence else None)
            self.metrics.undecodable.inc()
            await self._settle(msg.term)
            return
        structlog.contextvars.bind_contextvars(request_id=archive.request_id)  # this task's context only
        if opened.legacy:
            self.metrics.plaintext_accepted.inc()
            log.warning("payload_plaintext_accepted", detail="archive from a proxy older than payload sealing "
                        "(crossed the bus in clear); upgrade every proxy and set PROXY_ARCHIVE_PUBLIC_KEY")
        started = time.perf_counter()
        kid = self._keys.active.kid
        try:
            sealed = await asyncio.to_thread(self._seal, archive)
            await self._store.put(key, sealed, metadata=objects.metadata(archive, kid=kid))
        except Exception as exc:  # store down or refusing: never ack; JetStream redelivers after the delay
            delay = min(MAX_RETRY_DELAY_S, 2.0 ** min(delivered - 1, 6))
            self.metrics.failures.labels(reason=_code(exc)).inc()
            log.warning("payload_write_failed", error=_code(exc), attempt=delivered, retry_in_s=delay)
            await self._settle(msg.nak, delay=delay)
            return
        elapsed = time.perf_counter() - started
        await self._settle(msg.ack)
        self.archived += 1
        self.metrics.archived.inc()
        self.metrics.bytes_written.inc(len(sealed))
        self.metrics.put_latency.observe(elapsed)
        log.info("payload_archived", bytes=len(sealed), kid=kid, attempt=delivered, ms=round(elapsed * 1000, 2))

    def _seal(self, archive: PayloadArchive) -> bytes:
        return envelope.seal(objects.encode_archive(archive), archive.request_id, self._keys)

    @staticmethod
    async def _settle(action: Callable[..., Coroutine[Any, Any, None]], **kwargs: Any) -> None:
        try:
            await action(**kwargs)
        except Exception as exc:  # disconnected: unacked messages are redelivered after ACK_WAIT_S
            log.warning("payload_settle_failed", error=type(exc).__name__)

    # ------------------------------------------------------------------------------- link and fetch

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _on_link(self, msg: Msg) -> None:
        self._spawn(self._answer_link(msg))

    async def _on_fetch(self, msg: Msg) -> None:
        self._spawn(self._answer_fetch(msg))

    async def _answer_link(self, msg: Msg) -> None:
        try:
            request = _LINK_REQUEST.decode(msg.data)
        except msgspec.DecodeError as exc:
            reply, outcome = PayloadLinkReply(error=f"bad link request: {exc}"), "bad_request"
        else:
            structlog.contextvars.bind_contextvars(request_id=request.request_id)
            try:
                reply, outcome = await self.link(request)
            except Exception as exc:  # never go silent: the proxy would wait for its timeout
                log.exception("payload_link_failed", error=type(exc).__name__)
                reply, outcome = PayloadLinkReply(error="payload archive is unavailable"), "error"
        self.metrics.links.labels(outcome=outcome).inc()
        await msg.respond(codec.encode(reply))

    async def link(self, request: PayloadLinkRequest) -> tuple[PayloadLinkReply, str]:
        """A signed link when (organization, request id) has an archive; (reply, outcome for metrics)."""
        try:
            key = objects.object_key(request.organization_id, request.request_id)
        except InvalidKey:
            return PayloadLinkReply(), "absent"  # no archive can have such a key
        try:
            found = await self._store.head(key)
        except ArchiverError as exc:
            log.warning("payload_link_store_failed", error=exc.code)
            return PayloadLinkReply(error=f"payload archive store is unavailable ({exc.code})"), "error"
        if found is None:
            return PayloadLinkReply(), "absent"
        link = links.mint(request.organization_id, request.request_id, keys=self._link_keys,
                          ttl_s=self._url_ttl_s, now_s=self._clock())
        return PayloadLinkReply(path=link.path, expires_at_ms=link.expires * 1000), "minted"

    async def _answer_fetch(self, msg: Msg) -> None:
        try:
            request = _FETCH_REQUEST.decode(msg.data)
        except msgspec.DecodeError as exc:
            reply, outcome = _fetch_error(400, f"bad fetch request: {exc}", errors.FETCH_INVALID_REQUEST), "bad_request"
        else:
            structlog.contextvars.bind_contextvars(request_id=request.request_id)
            try:
                reply, outcome = await self.fetch(request)
            except Exception as exc:  # never go silent: the proxy would wait for its timeout
                log.exception("payload_fetch_failed", error=type(exc).__name__)
                reply = _fetch_error(503, "payload archive is unavailable", errors.FETCH_STORE_UNAVAILABLE)
                outcome = "error"
        if reply.status == 200 and not reply.sealed:  # fetch() only answers bodies sealed to the reply key
            reply, outcome = _fetch_error(500, "payload archive is unavailable", errors.FETCH_UNREADABLE), "error"
        data = codec.encode(reply)
        if len(data) > self._nc.max_payload:
            log.error("payload_fetch_too_large", bytes=len(data), max_payload=self._nc.max_payload)
            reply, outcome = _fetch_error(500, "the archived payload is too large to return",
                                          errors.FETCH_TOO_LARGE), "too_large"
            data = codec.encode(reply)
        self.metrics.fetches.labels(outcome=outcome).inc()
        await msg.respond(data)

    async def fetch(self, request: PayloadFetchRequest) -> tuple[PayloadFetchReply, str]:
        """Verify the link, read and open the archive, seal the body to the request's one-time key: (reply with
        the sealed JSON body or an error, outcome). A request without a key is refused: its body would cross
        the bus in clear."""
        if len(request.reply_key) != sealing.KEY_BYTES:
            return _fetch_error(400, "payload fetch requests must carry a 32-byte X25519 reply_key (a proxy older "
                                "than payload sealing: upgrade it)", errors.FETCH_INVALID_REQUEST), "no_reply_key"
        try:
            claims = links.verify(request.request_id, request.query, keys=self._link_keys, now_s=self._clock())
        except InvalidLink as exc:
            log.info("payload_link_rejected", reason=exc.reason)
            return _fetch_error(403, INVALID_LINK_MESSAGE, errors.FETCH_INVALID_LINK), f"invalid_{exc.reason}"
        key = objects.object_key(claims.organization_id, claims.request_id)
        try:
            blob = await self._store.get(key)
        except ObjectNotFound:
            return _fetch_error(404, "no payload is archived for this request (retention may have removed it)",
                                errors.FETCH_NOT_FOUND), "not_found"
        except ArchiverError as exc:
            log.warning("payload_fetch_store_failed", error=exc.code)
            return _fetch_error(503, "payload archive store is unavailable; retry later",
                                errors.FETCH_STORE_UNAVAILABLE), "store_unavailable"
        try:
            archive, body = await asyncio.to_thread(self._open, blob, claims.request_id, request.reply_key)
        except InvalidSealKey:
            return _fetch_error(400, "reply_key is not a usable X25519 public key", errors.FETCH_INVALID_REQUEST), \
                "bad_reply_key"
        except (EnvelopeError, msgspec.DecodeError) as exc:
            log.error("payload_unreadable", error=_code(exc))
            return _fetch_error(500, "the archived payload cannot be read", errors.FETCH_UNREADABLE), "unreadable"
        if archive.organization_id != claims.organization_id or archive.request_id != claims.request_id:
            log.warning("payload_link_foreign")
            return _fetch_error(403, INVALID_LINK_MESSAGE, errors.FETCH_INVALID_LINK), "invalid_foreign"
        return PayloadFetchReply(status=200, body=body, sealed=True), "ok"

    def _open(self, blob: bytes, request_id: str, reply_key: bytes) -> tuple[PayloadArchive, bytes]:
        """The archive, and its fetch body sealed to `reply_key` (bound to the request id)."""
        archive = objects.decode_archive(envelope.open_sealed(blob, request_id, self._keys))
        return archive, inbound.seal_fetch_body(objects.fetch_body(archive), archive.request_id, reply_key)

    # ------------------------------------------------------------------------------------ retention

    async def _set_lifecycle(self) -> None:
        """Ask S3 to expire objects itself; the sweep runs either way (FileStore and servers without rules)."""
        if self._retention_days <= 0 or not isinstance(self._store, S3Store):
            return
        try:
            await self._store.set_lifecycle(self._retention_days)
            log.info("retention_lifecycle_set", days=self._retention_days)
        except ArchiverError as exc:
            log.warning("retention_lifecycle_refused", error=exc.code, detail="the periodic sweep still applies")

    async def _sweep_loop(self) -> None:
        while not self._stopping.is_set():
            await self.sweep()
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self._sweep_interval_s)
            except TimeoutError:
                continue

    async def sweep(self) -> int:
        """Delete archives older than the retention; returns how many (0 when retention is off or it failed)."""
        if self._retention_days <= 0:
            return 0
        try:
            deleted = await self._store.expire(self._retention_days)
        except Exception as exc:  # the next sweep retries; the store's own lifecycle may cover meanwhile
            self.metrics.sweep_failures.inc()
            log.warning("retention_sweep_failed", error=_code(exc))
            return 0
        self.metrics.swept.inc(deleted)
        log.info("retention_swept", deleted=deleted, older_than_days=self._retention_days)
        return deleted


def _fetch_error(status: int, message: str, code: str) -> PayloadFetchReply:
    return PayloadFetchReply(status=status, error=message, code=code)


def make_app(archiver: Archiver, store: ObjectStore, nc: Client) -> web.Application:
    """Health probes and /metrics."""
    app = web.Application()

    async def ready() -> dict[str, object]:
        object_store = await store.ping()
        return {"ready": nc.is_connected and object_store and archiver.consuming, "nats": nc.is_connected,
                "object_store": object_store, "consuming": archiver.consuming, "archived": archiver.archived}

    add_health_routes(app, ready)
    add_metrics_route(app, archiver.metrics.registry)
    return app
