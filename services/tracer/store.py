"""The one place that talks to ClickHouse (embedded chdb or a server): ingest on one session and thread, analytics
and lookups on bounded pools of read-only sessions with limits, abandoned queries killed."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.common.logs import get_logger
from services.tracer import rows, schema
from services.tracer.limits import Limits, session_settings

Result = tuple[list[str], list[tuple[Any, ...]]]
log = get_logger()


class AnalyticsBusy(Exception):
    """Every analytics session stayed busy for the whole queue wait: answer 503 and let the caller retry."""


class AnalyticsPool:
    """Read-only sessions for queries someone else asked for, each on its own thread: at most `workers` run at once,
    a caller waits up to `queue_s` for a free one (else AnalyticsBusy), and a caller that goes away (its task is
    cancelled) has its query killed — `KILL QUERY` from a separate session, found by a marker comment the query
    carries — so an abandoned scan frees its session within a block rather than running to its limit.

    `settings` are applied once, when a session opens (limits.session_settings: the limits, then `readonly = 1`),
    and never changed afterwards; with a dedicated server user the profile holds them and `settings` is empty.
    """

    def __init__(self, url: str, *, settings: dict[str, Any], workers: int, queue_s: float, name: str) -> None:
        self._url = url
        self._settings = settings
        self._workers = workers
        self._queue_s = queue_s
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"clickhouse-{name}")
        self._killer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"clickhouse-{name}-kill")
        self._local = threading.local()
        self._clients: list[Client] = []
        self._clients_lock = threading.Lock()
        self._kill_client: Client | None = None
        self._slots = asyncio.Semaphore(workers)
        self._cleanups: set[asyncio.Task[None]] = set()
        self.killed = 0  # queries killed because their caller went away

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = clickhouse_connect.get_client(dsn=self._url, settings=dict(self._settings))
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _drop(self, client: Client) -> None:
        """Close this thread's session after a failed query; the next call opens a fresh one. On chdb a query that
        failed mid-result (a result limit, a kill) can leave its output in the handle, where the next query's answer
        was read after it (wrong columns, "unrecognized data found in stream")."""
        self._local.client = None
        with self._clients_lock:
            if client in self._clients:
                self._clients.remove(client)
        try:
            client.close()
        except Exception as exc:  # it is dropped all the same
            log.warning("analytics_session_close_failed", **error_detail(exc))

    async def query(self, sql: str, params: dict[str, Any]) -> Result:
        """Run one read-only statement on a free session; cancelled → the query is killed in the engine."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self._queue_s)
        except TimeoutError:
            raise AnalyticsBusy(f"all {self._workers} analytics sessions stayed busy for {self._queue_s:g} s") from None
        marker = f"/* routeur-query:{uuid.uuid4().hex} */"

        def run() -> Result:
            client = self._client()
            try:
                result = client.query(f"{marker} {sql}", parameters=params)
            except Exception:
                self._drop(client)
                raise
            return list(result.column_names), [tuple(row) for row in result.result_rows]

        future = asyncio.get_running_loop().run_in_executor(self._executor, run)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                # The slot is given back once the session's thread is free again (after the kill lands).
                task = asyncio.create_task(self._kill(marker, future))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)
            raise
        finally:
            if future.done():
                self._slots.release()

    async def _kill(self, marker: str, future: asyncio.Future[Result]) -> None:
        try:
            if not future.done():
                await asyncio.get_running_loop().run_in_executor(self._killer, self._kill_now, marker)
                self.killed += 1
                log.info("analytics_query_killed", pool=self._name)
            await asyncio.wait({future})
            if not future.cancelled():
                future.exception()  # retrieved: the engine's "query was cancelled" is expected here
        except Exception as exc:  # the kill itself failed: the query ends by its limits instead
            log.warning("analytics_kill_failed", **error_detail(exc))
            await asyncio.wait({future})
        finally:
            self._slots.release()

    def _kill_now(self, marker: str) -> None:
        if self._kill_client is None:
            self._kill_client = clickhouse_connect.get_client(dsn=self._url, settings=dict(self._settings))
        # The marker is passed as a parameter, so this statement's own text does not match it.
        self._kill_client.query("KILL QUERY WHERE startsWith(query, {marker:String}) ASYNC",
                                parameters={"marker": marker})

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.wait(self._cleanups, timeout=10)
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            await loop.run_in_executor(None, client.close)
        if self._kill_client is not None:
            await loop.run_in_executor(self._killer, self._kill_client.close)
        self._executor.shutdown(wait=True)
        self._killer.shutdown(wait=True)


class TraceStore:
    """Serialises the tracer's own ClickHouse calls (inserts, migrations, the redelivery lookup, the rollup
    reconciler: limits.py says why these) onto one thread (chdb's client is synchronous), on a session no other
    caller touches; `analytics` (the admin's SQL) and `lookup` (trace, logs and usage queries over NATS) run on
    their own pools of read-only sessions (AnalyticsPool), so neither can hold up or change an insert.

    Separate sessions because the driver's chdb backend applies some per-call settings with `SET` on the session and
    restores them afterwards: a statement sent with `readonly = 1` on the ingest session left it read-only (the
    restore is itself refused) and every insert after it failed. The analytics sessions are read-only from birth and
    never change a setting; the ingest session never receives one of their statements. Should the ingest session
    wedge anyway, `reset_ingest` opens a fresh one.
    """

    def __init__(self, url: str, *, analytics_url: str = "", limits: Limits | None = None, workers: int = 2,
                 queue_s: float = 2.0) -> None:
        self._url = url
        self._client: Client | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._types: list[str] | None = None  # `traces` column types in rows.COLUMNS order, read once
        # The admin's SQL: a dedicated analytics identity (a server user) brings its own profile — readonly, limits
        # and quotas are its own and a session cannot change them — so no setting is sent. Otherwise its sessions are
        # the ingest URL's, made read-only with the limits here. The lookups run only the tracer's own SQL: always
        # the ingest URL's identity, on read-only sessions with the same limits (a user's quota never starves them).
        own = session_settings(limits or Limits(), readonly=True)
        self.analytics_pool = AnalyticsPool(analytics_url or url, settings={} if analytics_url else own,
                                            workers=workers, queue_s=queue_s, name="analytics")
        self.lookup_pool = AnalyticsPool(url, settings=own, workers=workers, queue_s=queue_s, name="lookup")

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _connect(self) -> Client:
        if self._client is None:
            self._client = clickhouse_connect.get_client(dsn=self._url)
        return self._client

    async def reset_ingest(self) -> None:
        """Close the ingest client and open a fresh one at its next call (a new session on chdb, a new connection
        pool on a server): what heals a session left in a bad state."""

        def reset() -> None:
            client, self._client, self._types = self._client, None, None
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # a broken client may fail to close: it is dropped all the same
                    log.warning("clickhouse_client_close_failed", **error_detail(exc))

        await self._run(reset)

    async def open(self, *, ttl_days: int) -> None:
        """Connect and apply pending migrations and the retention TTL (idempotent)."""
        await self._run(self._migrate, ttl_days)

    def _migrate(self, ttl_days: int) -> None:
        client = self._connect()
        client.command(schema.MIGRATIONS_TABLE)
        applied = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
        for version, statement in schema.MIGRATIONS:
            if version not in applied:
                for step in (statement,) if isinstance(statement, str) else statement:
                    client.command(step)
                client.insert("schema_migrations", [[version]], column_names=["version"])
        client.command(schema.ttl_statement(ttl_days))

    async def insert(self, columns: list[list[Any]], *, dedup_token: str | None = None) -> None:
        """Insert one block given column by column (rows.to_columns); a retry with the same `dedup_token`
        is dropped, rollups included."""
        settings: dict[str, Any] = {"deduplicate_blocks_in_dependent_materialized_views": 1}
        if dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        await self._run(self._insert, columns, settings)

    def _insert(self, columns: list[list[Any]], settings: dict[str, Any]) -> None:
        client = self._connect()
        if self._types is None:  # known types spare the client a DESCRIBE TABLE before every insert
            described = {row[0]: row[1] for row in client.query("DESCRIBE TABLE traces").result_rows}
            self._types = [described[name] for name in rows.COLUMNS]
        client.insert("traces", columns, column_names=list(rows.COLUMNS), column_type_names=self._types,
                      column_oriented=True, settings=settings)

    async def existing_ids(self, keys: list[tuple[str, int, str]]) -> set[str]:
        """Which of these (organization_id, timestamp_ms, request_id) are already stored.

        Used for redelivered messages only; the primary key (organization, ts) bounds the scan.
        """
        if not keys:
            return set()
        sql = ("SELECT DISTINCT request_id FROM traces WHERE organization_id IN {orgs:Array(String)} "
               "AND ts BETWEEN fromUnixTimestamp64Milli({lo:Int64}, 'UTC') "
               "AND fromUnixTimestamp64Milli({hi:Int64}, 'UTC') AND request_id IN {ids:Array(String)}")
        params = {"orgs": sorted({k[0] for k in keys}), "lo": min(k[1] for k in keys),
                  "hi": max(k[1] for k in keys), "ids": [k[2] for k in keys]}
        _, found = await self.select(sql, params)
        return {row[0] for row in found}

    async def select(self, sql: str, params: dict[str, Any]) -> Result:
        """One of the tracer's own queries, on the ingest session (no per-call settings: see the class)."""

        def query() -> Result:
            result = self._connect().query(sql, parameters=params)
            return list(result.column_names), [tuple(row) for row in result.result_rows]

        return await self._run(query)  # type: ignore[no-any-return]

    async def analytics(self, sql: str, params: dict[str, Any]) -> Result:
        """The admin's query (already checked by readonly_sql) on a read-only analytics session, within its limits;
        cancelled (the client went away) → killed in the engine."""
        return await self.analytics_pool.query(sql, params)

    async def lookup(self, sql: str, params: dict[str, Any]) -> Result:
        """A trace, logs or usage query asked over NATS, on a read-only lookup session within the same limits."""
        return await self.lookup_pool.query(sql, params)

    async def execute(self, sql: str, params: dict[str, Any], *, settings: dict[str, Any] | None = None) -> None:
        """A statement without a result (the reconciler's DELETE and INSERT … SELECT)."""
        await self._run(lambda: self._connect().command(sql, parameters=params, settings=settings))

    async def ping(self) -> bool:
        try:
            await self._run(lambda: self._connect().command("SELECT 1"))
            return True
        except Exception:  # any failure means not ready; the detail goes to /readyz
            return False

    async def close(self) -> None:
        await self.analytics_pool.close()
        await self.lookup_pool.close()
        client = self._client
        if client is not None:
            await self._run(client.close)
        self._executor.shutdown(wait=True)


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'")


def error_detail(exc: BaseException) -> dict[str, Any]:
    """What a log line may say of a ClickHouse failure: the exception type, the engine's error code and name, and
    its message's first line with every quoted literal blanked (an engine message can quote a value)."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    return {"error": type(exc).__name__, "code": getattr(exc, "code", None), "name": getattr(exc, "name", None),
            "message": _QUOTED.sub("'…'", message)[:300]}
