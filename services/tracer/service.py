"""Tracer I/O: the JetStream batch consumer, NATS lookups and the read-only SQL HTTP endpoint."""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from proto import codec, subjects
from proto.trace import LogsQuery, LogsReply, TraceEvent, TraceQuery, TraceReply, UsageQuery, UsageReply
from services.common.health import add_health_routes
from services.common.logs import get_logger
from services.common.metrics import add_metrics_route
from services.tracer import rows, usage
from services.tracer.metrics import TracerMetrics
from services.tracer.settings import Settings
from services.tracer.store import TraceStore

log = get_logger()


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
        self.last_insert_error: str | None = None
        self.metrics = TracerMetrics()

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
        sub = await self._js.pull_subscribe(
            subjects.TRACE_SUBJECT,
            durable=subjects.TRACE_CONSUMER,
            stream=subjects.TRACE_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                  ack_wait=60, max_ack_pending=50_000),
        )
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await sub.fetch(self._settings.batch_size, timeout=self._settings.flush_interval_s)
                except (TimeoutError, NatsTimeout):
                    self.metrics.lag.set(0)
                    continue
                except Exception as exc:  # NATS reconnecting: keep the loop alive, retry shortly
                    log.warning("trace_fetch_failed", error=type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                if not msgs:
                    continue
                self.metrics.lag.set(msgs[-1].metadata.num_pending or 0)
                try:
                    await self._write(msgs)
                except Exception:  # never let one batch kill the consumer; unacked messages come back
                    log.exception("trace_batch_failed", batch=len(msgs))
                    await asyncio.sleep(1.0)
        finally:
            await sub.unsubscribe()

    async def _write(self, msgs: list[Msg]) -> None:
        events: list[TraceEvent] = []
        good: list[Msg] = []
        for msg in msgs:
            try:
                events.append(codec.decode(msg.data, TraceEvent))
                good.append(msg)
            except msgspec.DecodeError:
                log.error("trace_message_undecodable", size=len(msg.data))
                self.metrics.undecodable.inc()
                await msg.term()
        if not events:
            return
        started = time.perf_counter()
        try:
            await self.store_events(events, redelivered={m.metadata.num_delivered or 1 for m in good} != {1})
        except Exception as exc:  # ClickHouse down: leave the batch unacked, retry after a pause
            self.last_insert_error = type(exc).__name__
            self.metrics.failed_inserts.inc()
            log.error("trace_insert_failed", error=type(exc).__name__, batch=len(events))
            for msg in good:
                await msg.nak(delay=1.0)
            await asyncio.sleep(1.0)
            return
        self.last_insert_error = None
        self.metrics.insert_latency.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(events))
        for msg in good:
            await msg.ack()
        self.inserted += len(events)
        self.metrics.inserted.inc(len(events))
        log.debug("trace_batch_inserted", batch=len(events), ms=round((time.perf_counter() - started) * 1000, 2))

    async def store_events(self, events: list[TraceEvent], *, redelivered: bool) -> int:
        """Insert a batch exactly once into `traces` and the rollups; returns the rows inserted.

        In-batch repeats are dropped; a retry of the same batch is dropped by ClickHouse (insert
        deduplication token = hash of its request ids); when the batch holds redelivered messages,
        request ids already stored are dropped first (a redelivery can land in a different batch).
        """
        batch = rows.unique_rows(events)
        if redelivered and batch:
            stored = await self._store.existing_ids([(row[2], round(row[1].timestamp() * 1000), row[0])
                                                     for row in batch])
            batch = [row for row in batch if row[0] not in stored]
        if batch:
            await self._store.insert(batch, dedup_token=rows.dedup_token(row[0] for row in batch))
        return len(batch)

    async def get(self, query: TraceQuery) -> TraceEvent | None:
        sql = f"SELECT {rows.SELECT_LIST} FROM traces FINAL WHERE request_id = {{request_id:String}}"
        params: dict[str, Any] = {"request_id": query.request_id}
        if query.organization_id is not None:
            sql += " AND organization_id = {organization_id:String}"
            params["organization_id"] = query.organization_id
        _, found = await self._store.select(sql + " LIMIT 1", params)
        return rows.from_row(found[0]) if found else None

    async def logs(self, query: LogsQuery) -> LogsReply:
        sql, params = rows.logs_query(query)
        _, found = await self._store.select(sql, params)
        traces = tuple(rows.from_row(row) for row in found)
        more = len(traces) == params["limit"]
        return LogsReply(traces=traces, next_cursor=rows.cursor_of(traces[-1]) if more else None)

    async def usage(self, query: UsageQuery, now_ms: int | None = None) -> UsageReply:
        """Usage per bucket × group and totals, from the per-minute rollup only."""
        since, until = usage.resolve(query, now_ms if now_ms is not None else int(time.time() * 1000))
        sql, params = usage.usage_query(query, since, until)
        _, found = await self._store.select(sql, params)
        result = tuple(usage.to_usage_row(usage.bucket_ms(row[0]), row[1], row[2:]) for row in found)
        sql, params = usage.totals_query(query, since, until)
        _, total = await self._store.select(sql, params)
        totals = usage.to_usage_row(since, "", total[0]) if total else None
        return UsageReply(rows=result, totals=totals, since_ms=since, until_ms=until)

    async def _on_get(self, msg: Msg) -> None:
        try:
            reply = TraceReply(trace=await self.get(codec.decode(msg.data, TraceQuery)))
        except msgspec.DecodeError as exc:
            reply = TraceReply(error=f"bad query: {exc}")
        except Exception as exc:  # store failure: answer with an error rather than go silent
            reply = TraceReply(error=f"trace store unavailable: {type(exc).__name__}")
        await msg.respond(codec.encode(reply))

    async def _on_logs(self, msg: Msg) -> None:
        try:
            reply = await self.logs(codec.decode(msg.data, LogsQuery))
        except (msgspec.DecodeError, ValueError) as exc:
            reply = LogsReply(error=f"bad query: {exc}")
        except Exception as exc:  # store failure: answer with an error rather than go silent
            log.warning("logs_query_failed", error=type(exc).__name__)
            reply = LogsReply(error=f"trace store unavailable: {type(exc).__name__}")
        await msg.respond(codec.encode(reply))

    async def _on_usage(self, msg: Msg) -> None:
        try:
            reply = await self.usage(codec.decode(msg.data, UsageQuery))
        except (msgspec.DecodeError, ValueError) as exc:
            reply = UsageReply(error=f"bad query: {exc}")
        except Exception as exc:  # store failure: the type only, never the engine's message
            log.warning("usage_query_failed", error=type(exc).__name__)
            reply = UsageReply(error=f"trace store unavailable: {type(exc).__name__}")
        await msg.respond(codec.encode(reply))


class SqlQuery(msgspec.Struct, frozen=True):
    query: str
    parameters: dict[str, Any] = {}


def make_app(settings: Settings, tracer: Tracer, store: TraceStore, nc: Client) -> web.Application:
    """Health probes and `POST /v1/sql` (admin token; read-only) for analytics."""
    app = web.Application(client_max_size=1 << 20)

    async def ready() -> dict[str, object]:
        clickhouse = await store.ping()
        return {"ready": nc.is_connected and clickhouse, "nats": nc.is_connected, "clickhouse": clickhouse,
                "inserted": tracer.inserted, "last_insert_error": tracer.last_insert_error}

    async def sql(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(token.encode(), settings.admin_token.reveal().encode()):
            return _error(401, "an admin token is required: Authorization: Bearer <ROUTEUR_ADMIN_TOKEN>",
                          "invalid_request_error", "invalid_admin_token")
        try:
            body = msgspec.json.decode(await request.read(), type=SqlQuery)
        except msgspec.DecodeError as exc:
            return _error(400, f"body must be {{\"query\": \"SELECT …\"}}: {exc}", "invalid_request_error",
                          "invalid_body")
        try:
            columns, found = await store.select(body.query, body.parameters, readonly=True)
        except Exception as exc:  # the engine's message is the useful answer for an analyst
            return _error(400, str(exc).splitlines()[0][:500], "invalid_request_error", "query_failed")
        return web.Response(body=codec.encode({"columns": columns, "rows": found}), content_type="application/json")

    add_health_routes(app, ready)
    add_metrics_route(app, tracer.metrics.registry)
    app.router.add_post("/v1/sql", sql)
    return app


def _error(status: int, message: str, kind: str, code: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status)
