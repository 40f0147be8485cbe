"""Tracer I/O: the JetStream batch consumer loop (its decisions are ingest.py's), NATS lookups and the admin's
read-only SQL HTTP endpoint."""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from typing import Any

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from proto import codec, subjects
from proto.trace import (
    REPLY_BAD_QUERY,
    REPLY_FAILED,
    LogsQuery,
    LogsReply,
    TraceEvent,
    TraceQuery,
    TraceReply,
    UsageQuery,
    UsageReply,
)
from services.common.health import add_health_routes
from services.common.logs import get_logger
from services.common.metrics import add_metrics_route
from services.tracer import limits, readonly_sql, reconcile, rows, usage
from services.tracer.batching import FlushPolicy
from services.tracer.ingest import Cursor, InsertHealth
from services.tracer.metrics import TracerMetrics
from services.tracer.pull import Puller
from services.tracer.rows import QueryError
from services.tracer.settings import Settings
from services.tracer.store import AnalyticsBusy, TraceStore, error_detail
from services.tracer.suspects import Suspects, minutes_of

log = get_logger()
_STOP_CHECK_S = 0.5  # how often an idle consumer looks at the stop flag
_STOP_RECONCILE_S = 5.0  # at stop, suspect buckets still waiting are checked for at most this long
_RECOVER_RETRY_S = 5.0  # the startup scan (reconcile.Reconciler.recover) failed: try again this much later
_RESET_EVERY_S = 5.0  # while inserts are unhealthy, a fresh ingest client at most this often
_DISCONNECT_POLL_S = 0.1  # how often /v1/sql looks whether its client is still connected


class Tracer:
    """Owns the consumer loop and the query handlers; the store is the only ClickHouse user."""

    def __init__(self, settings: Settings, nc: Client, js: JetStreamContext, store: TraceStore) -> None:
        self._settings = settings
        self._nc = nc
        self._js = js
        self._store = store
        self._stopping = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._subs: list[Any] = []
        self.inserted = 0
        self.cursor = Cursor()  # where this process stands in the stream (replay detection)
        self.health = InsertHealth()  # failed inserts in a row: /readyz
        self.metrics = TracerMetrics()
        self._reconnects = 0
        # Tests drive store_events on a Tracer built without settings: the defaults of Settings then.
        delay_s, window_s, ttl_days = ((settings.reconcile_delay_s, settings.reconcile_suspect_s, settings.ttl_days)
                                       if settings is not None else (60.0, 120.0, 90))
        self.suspects = Suspects(delay_s=delay_s, window_s=window_s)
        self.reconciler = reconcile.Reconciler(store, self.metrics, self.suspects, ttl_days=ttl_days)
        self._recover_at: float | None = 0.0  # when to run the startup scan (again); None once it succeeded
        self.gave_up = asyncio.Event()  # inserts failed for ingest_exit_s despite fresh clients: exit to restart
        self.resets = 0  # fresh ingest clients opened because inserts kept failing
        self._last_reset = -math.inf

    async def start(self) -> None:
        self._subs.append(await self._nc.subscribe(subjects.TRACER_GET, cb=self._on_get))
        self._subs.append(await self._nc.subscribe(subjects.TRACER_LOGS, cb=self._on_logs))
        self._subs.append(await self._nc.subscribe(subjects.TRACER_USAGE, cb=self._on_usage))
        self._consumer = asyncio.create_task(self._consume(), name="trace-consumer")

    async def stop(self) -> None:
        """Finish and ack the batch in hand, then stop consuming and answering."""
        self._stopping.set()
        if self._consumer is not None:
            await self._consumer
        for sub in self._subs:
            await sub.unsubscribe()

    async def _consume(self) -> None:
        policy = FlushPolicy(self._settings.batch_size, self._settings.flush_interval_s)
        self._reconnects = self._nc.stats["reconnects"]
        self.suspects.open_window(time.monotonic())
        await self._recover()
        await self._ensure_consumer()
        puller = Puller(self._nc, stream=subjects.TRACE_STREAM, consumer=subjects.TRACE_CONSUMER,
                        limit=policy.buffer_limit, ensure_consumer=self._ensure_consumer)
        await puller.start()
        try:
            while not self._stopping.is_set():
                await self._until_due(puller, policy)
                if puller.buffered:
                    await self._write_batch(puller.take(policy.max_rows))
        finally:
            await puller.stop()
            while puller.buffered:  # delivered while we stopped: store and ack them rather than wait for redelivery
                await self._write_batch(puller.take(policy.max_rows))
            # Nothing of ours is inserted any more: check what waits now rather than lose it with the process
            # (within a few seconds: the process may have little time left before it is killed).
            deadline = time.monotonic() + _STOP_RECONCILE_S
            while len(self.suspects) and time.monotonic() < deadline:
                if not await self.reconciler.round(time.monotonic(), wall_s=time.time(), everything=True):
                    break

    async def _recover(self) -> None:
        """The startup scan: suspect what the previous process ingested last (it may have died mid-insert) and the
        repairs it left unfinished. Retried from the consumer loop until ClickHouse answers."""
        now = time.monotonic()
        try:
            recent, unfinished = await self.reconciler.recover(now)
        except Exception as exc:  # ClickHouse not answering yet
            log.warning("rollup_recover_failed", **error_detail(exc), retry_s=_RECOVER_RETRY_S)
            self._recover_at = now + _RECOVER_RETRY_S
            return
        self._recover_at = None
        if recent or unfinished:
            log.info("rollup_buckets_suspect_at_start", recent=recent, unfinished_repairs=unfinished)

    async def _maintain(self) -> None:
        """Between batches: notice a NATS reconnect (the server may have lost acks: suspect window), finish the
        startup scan if it failed, and run the reconciler when a suspect bucket is due. O(1) when nothing is due."""
        now = time.monotonic()
        reconnects = self._nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self.suspects.open_window(now)
        if self._recover_at is not None and now >= self._recover_at:
            await self._recover()
        if self.suspects.due(now):
            await self.reconciler.round(now, wall_s=time.time())

    async def _ensure_consumer(self) -> None:
        """Create the durable consumer unless it exists (an existing one keeps its configuration)."""
        while not self._stopping.is_set():
            try:
                await self._js.consumer_info(subjects.TRACE_STREAM, subjects.TRACE_CONSUMER)
                return
            except NotFoundError:
                config = ConsumerConfig(durable_name=subjects.TRACE_CONSUMER, name=subjects.TRACE_CONSUMER,
                                        filter_subject=subjects.TRACE_SUBJECT, ack_policy=AckPolicy.EXPLICIT,
                                        deliver_policy=DeliverPolicy.ALL, ack_wait=60, max_ack_pending=50_000)
                await self._js.add_consumer(subjects.TRACE_STREAM, config=config)
                # Its first deliveries include whatever a lost consumer had already stored: check them all
                # against the table, as redeliveries, until it has caught up with the stream.
                self.cursor.consumer_created()
                return
            except Exception as exc:  # NATS reconnecting at start: keep trying
                log.warning("trace_consumer_unavailable", error=type(exc).__name__)
                await asyncio.sleep(0.5)

    async def _until_due(self, puller: Puller, policy: FlushPolicy) -> None:
        """Wait until the buffered messages make a batch (FlushPolicy) or the tracer stops."""
        while not self._stopping.is_set():
            await self._maintain()
            age = puller.oldest_age_s()
            if policy.due(puller.buffered, age):
                return
            if not puller.buffered:
                self.metrics.lag.set(0)
                await puller.wait(1, _STOP_CHECK_S)
            else:
                await puller.wait(policy.max_rows, min(policy.wait_s(age), _STOP_CHECK_S))

    async def _write_batch(self, msgs: list[Msg]) -> None:
        try:
            await self._write(msgs)
        except Exception:  # never let one batch kill the consumer; unacked messages come back
            log.exception("trace_batch_failed", batch=len(msgs))
            await asyncio.sleep(1.0)

    async def _write(self, msgs: list[Msg]) -> None:
        """Decode, insert, then ack: a message is acknowledged only once its row is stored."""
        batch = self.cursor.sort([(msg.data, msg.reply) for msg in msgs])
        for index in batch.bad:
            log.error("trace_message_undecodable", size=len(msgs[index].data))
            self.metrics.undecodable.inc()
            await msgs[index].term()
        if not batch.events:
            return
        good = [msgs[index] for index in batch.good]
        self.metrics.lag.set(batch.pending)
        started = time.perf_counter()
        try:
            await self.store_events(batch.events, redelivered=batch.redelivered)
        except Exception as exc:  # ClickHouse down or refusing: leave the batch unacked, retry after a pause
            detail = error_detail(exc)
            self.health.failed(time.monotonic(), _summary(detail))
            self.metrics.failed_inserts.inc()
            log.error("trace_insert_failed", **detail, batch=len(batch.events),
                      failures_in_a_row=self.health.failures)
            for msg in good:
                await msg.nak(delay=1.0)
            await self._heal(time.monotonic())
            await asyncio.sleep(1.0)
            return
        if self.health.failures:
            log.info("trace_insert_recovered", failures_in_a_row=self.health.failures)
        self.health.succeeded()
        self.cursor.stored(batch)
        self.metrics.insert_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(batch.events))
        await self._ack(good)
        self.inserted += len(batch.events)
        self.metrics.inserted.inc(len(batch.events))
        log.debug("trace_batch_inserted", batch=len(batch.events),
                  ms=round((time.perf_counter() - started) * 1000, 2))

    async def _heal(self, now: float) -> None:
        """Inserts are unhealthy (ingest.InsertHealth): open a fresh ClickHouse client (at most every
        _RESET_EVERY_S), since a session left in a bad state heals no other way; failing for `ingest_exit_s` even
        so, give up (`gave_up` is set and __main__ exits 1 so the supervisor or Kubernetes starts a new process)."""
        if self.health.healthy(now):
            return
        failing_s = self.health.failing_for_s(now)
        exit_s = self._settings.ingest_exit_s if self._settings is not None else 0.0
        if exit_s and failing_s >= exit_s and not self.gave_up.is_set():
            log.error("trace_ingest_gave_up", failing_for_s=round(failing_s, 1), last_error=self.health.last_error)
            self.gave_up.set()
            self._stopping.set()
            return
        if now - self._last_reset >= _RESET_EVERY_S:
            self._last_reset = now
            self.resets += 1
            log.warning("clickhouse_ingest_client_reset", failing_for_s=round(failing_s, 1),
                        failures_in_a_row=self.health.failures, resets=self.resets)
            await self._store.reset_ingest()

    async def _ack(self, msgs: list[Msg]) -> None:
        """Acknowledge stored messages (one small publish each, written to the socket together)."""
        for msg in msgs:
            await msg.ack()

    async def store_events(self, events: list[TraceEvent], *, redelivered: bool) -> int:
        """Insert a batch exactly once into `traces` and the rollups; returns the rows inserted.

        In-batch repeats are dropped; a retry of the same batch is dropped by ClickHouse (insert
        deduplication token = hash of its request ids); when the batch holds redelivered messages,
        request ids already stored are dropped first (a redelivery can land in a different batch).
        `traces` is then exact, but the rollups may not be (reconcile.py): the minutes of a batch holding
        redeliveries (its rows may have been stored half by a failed or killed insert: in `traces` and not in the
        rollups, or the reverse), of a failed insert, and of any batch inserted during a suspect window are marked
        for the reconciler.
        """
        batch = rows.unique(events)
        if redelivered and batch:
            stored = await self._store.existing_ids([(e.organization_id, e.timestamp_ms, e.request_id)
                                                     for e in batch])
            self.suspects.mark(minutes_of(batch), time.monotonic())
            batch = [e for e in batch if e.request_id not in stored]
        if batch:
            try:
                await self._store.insert(rows.to_columns(batch),
                                         dedup_token=rows.dedup_token(e.request_id for e in batch))
            except Exception:
                now = time.monotonic()
                self.suspects.mark(minutes_of(batch), now)
                self.suspects.open_window(now)
                raise
            now = time.monotonic()
            if self.suspects.in_window(now):
                self.suspects.mark(minutes_of(batch), now)
        self.metrics.reconcile_pending.set(len(self.suspects))
        return len(batch)

    async def get(self, query: TraceQuery) -> TraceEvent | None:
        sql = f"SELECT {rows.SELECT_LIST} FROM traces FINAL WHERE request_id = {{request_id:String}}"
        params: dict[str, Any] = {"request_id": query.request_id}
        if query.organization_id is not None:
            sql += " AND organization_id = {organization_id:String}"
            params["organization_id"] = query.organization_id
        _, found = await self._store.lookup(sql + " LIMIT 1", params)
        return rows.from_row(found[0]) if found else None

    async def logs(self, query: LogsQuery) -> LogsReply:
        sql, params = rows.logs_query(query)
        _, found = await self._store.lookup(sql, params)
        traces = tuple(rows.from_row(row) for row in found)
        more = len(traces) == params["limit"]
        return LogsReply(traces=traces, next_cursor=rows.cursor_of(traces[-1]) if more else None)

    async def usage(self, query: UsageQuery, now_ms: int | None = None) -> UsageReply:
        """Usage per bucket × group and totals, from the per-minute rollup only."""
        since, until = usage.resolve(query, now_ms if now_ms is not None else int(time.time() * 1000))
        sql, params = usage.usage_query(query, since, until)
        _, found = await self._store.lookup(sql, params)
        result = tuple(usage.to_usage_row(usage.bucket_ms(row[0]), row[1], row[2:]) for row in found)
        sql, params = usage.totals_query(query, since, until)
        _, total = await self._store.lookup(sql, params)
        totals = usage.to_usage_row(since, "", total[0]) if total else None
        return UsageReply(rows=result, totals=totals, since_ms=since, until_ms=until)

    async def _on_get(self, msg: Msg) -> None:
        try:
            reply = TraceReply(trace=await self.get(codec.decode(msg.data, TraceQuery)))
        except msgspec.DecodeError as exc:
            reply = TraceReply(error=_undecodable(exc), code=REPLY_BAD_QUERY)
        except Exception as exc:  # store failure: answer with an error rather than go silent
            log.warning("trace_query_failed", **error_detail(exc))
            reply = TraceReply(error=_unavailable(exc), code=REPLY_FAILED)
        await msg.respond(codec.encode(reply))

    async def _on_logs(self, msg: Msg) -> None:
        try:
            reply = await self.logs(codec.decode(msg.data, LogsQuery))
        except msgspec.DecodeError as exc:
            reply = LogsReply(error=_undecodable(exc), code=REPLY_BAD_QUERY)
        except QueryError as exc:
            reply = LogsReply(error=str(exc), code=REPLY_BAD_QUERY)
        except Exception as exc:  # store failure: answer with an error rather than go silent
            log.warning("logs_query_failed", **error_detail(exc))
            reply = LogsReply(error=_unavailable(exc), code=REPLY_FAILED)
        await msg.respond(codec.encode(reply))

    async def _on_usage(self, msg: Msg) -> None:
        try:
            reply = await self.usage(codec.decode(msg.data, UsageQuery))
        except msgspec.DecodeError as exc:
            reply = UsageReply(error=_undecodable(exc), code=REPLY_BAD_QUERY)
        except QueryError as exc:
            reply = UsageReply(error=str(exc), code=REPLY_BAD_QUERY)
        except Exception as exc:  # store failure: the type only in the reply, never the engine's message
            log.warning("usage_query_failed", **error_detail(exc))
            reply = UsageReply(error=_unavailable(exc), code=REPLY_FAILED)
        await msg.respond(codec.encode(reply))


class SqlQuery(msgspec.Struct, frozen=True):
    query: str
    parameters: dict[str, Any] = {}


def make_app(settings: Settings, tracer: Tracer, store: TraceStore, nc: Client) -> web.Application:
    """Health probes and `POST /v1/sql` (admin token; read-only) for analytics."""
    app = web.Application(client_max_size=1 << 20)

    async def ready() -> dict[str, object]:
        """Not ready while NATS or ClickHouse is unreachable, or while inserts keep failing (ingest.InsertHealth)."""
        clickhouse = await store.ping()
        now = time.monotonic()
        inserting = tracer.health.healthy(now)
        return {"ready": nc.is_connected and clickhouse and inserting, "nats": nc.is_connected,
                "clickhouse": clickhouse, "inserting": inserting, "inserted": tracer.inserted,
                "failed_inserts_in_a_row": tracer.health.failures,
                "failing_for_s": round(tracer.health.failing_for_s(now), 1),
                "last_insert_error": tracer.health.last_error}

    async def sql(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), settings.admin_token.reveal().encode()):
            return _error(401, "an admin token is required: Authorization: Bearer <ROUTEUR_ADMIN_TOKEN>",
                          "invalid_request_error", "invalid_admin_token")
        try:
            body = msgspec.json.decode(await request.read(), type=SqlQuery)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            return _error(400, f"body must be {{\"query\": \"SELECT …\"}}: {exc}",
                          "invalid_request_error", "invalid_body")
        try:
            statement = readonly_sql.check(body.query, set(body.parameters))
        except readonly_sql.RefusedQuery as exc:
            return _error(400, str(exc), "invalid_request_error", "read_only_sql")
        query = asyncio.ensure_future(store.analytics(statement.sql, body.parameters))
        try:
            while not (await asyncio.wait({query}, timeout=_DISCONNECT_POLL_S))[0]:
                if _disconnected(request):  # the client went away: cancelling kills the query in the engine
                    query.cancel()
                    log.info("sql_query_abandoned")
                    return _error(499, "the client closed the connection", "invalid_request_error", "client_closed")
            columns, found = query.result()
        except asyncio.CancelledError:  # the handler itself cancelled (aiohttp on a lost connection)
            query.cancel()
            raise
        except AnalyticsBusy as exc:
            log.warning("sql_query_busy", reason=str(exc))
            response = _error(503, f"{exc}; retry shortly", "server_error", "analytics_busy")
            response.headers["Retry-After"] = "1"
            return response
        except Exception as exc:
            detail = error_detail(exc)
            limit = limits.limit_hit(detail["code"], str(exc))
            log.warning("sql_query_failed", **detail, limit=limit)
            if limit is not None:
                return _error(400, f"the query exceeded its {limit} limit: {detail['message']}",
                              "invalid_request_error", "query_limit_exceeded", param=limit)
            # the engine's message is the useful answer for an analyst
            return _error(400, str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
                          "invalid_request_error", "query_failed")
        return web.Response(body=codec.encode({"columns": columns, "rows": found}), content_type="application/json")

    add_health_routes(app, ready)
    add_metrics_route(app, tracer.metrics.registry)
    app.router.add_post("/v1/sql", sql)
    return app


def _summary(detail: dict[str, Any]) -> str:
    """A failure in a few words for /readyz: the exception type and the engine's error code and name."""
    code = f" {detail['code']}" if detail["code"] is not None else ""
    name = f" ({detail['name']})" if detail["name"] else ""
    return f"{detail['error']}{code}{name}"


def _undecodable(exc: Exception) -> str:
    return f"the query does not decode: {exc}"


def _unavailable(exc: Exception) -> str:
    return f"trace store unavailable: {type(exc).__name__}"


def _disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _error(status: int, message: str, kind: str, code: str, *, param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status)
