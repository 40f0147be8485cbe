"""The one place that talks to ClickHouse (embedded chdb or a server): ingest on one session and thread, the
admin's analytics on another."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.tracer import rows, schema

Result = tuple[list[str], list[tuple[Any, ...]]]


class TraceStore:
    """Serialises the tracer's own ClickHouse calls onto one thread (chdb's client is synchronous), on a session no
    other caller touches; `analytics` runs the admin's SQL on a second, read-only session and thread.

    Two sessions because the driver's chdb backend applies some per-call settings with `SET` on the session and
    restores them afterwards: a statement sent with `readonly = 1` on the ingest session left it read-only (the
    restore is itself refused) and every insert after it failed. The analytics session is read-only from birth and
    never changes a setting; the ingest session never receives one of its statements.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Client | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._analytics_client: Client | None = None
        self._analytics_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-analytics")
        self._types: list[str] | None = None  # `traces` column types in rows.COLUMNS order, read once

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _connect(self) -> Client:
        if self._client is None:
            self._client = clickhouse_connect.get_client(dsn=self._url)
        return self._client

    def _connect_analytics(self) -> Client:
        if self._analytics_client is None:
            self._analytics_client = clickhouse_connect.get_client(dsn=self._url, settings={"readonly": 1})
        return self._analytics_client

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
        """The admin's query (already checked by readonly_sql) on the read-only analytics session and thread: a slow
        one never holds up an insert, and nothing it does reaches the ingest session."""
        loop = asyncio.get_running_loop()

        def query() -> Result:
            result = self._connect_analytics().query(sql, parameters=params)
            return list(result.column_names), [tuple(row) for row in result.result_rows]

        return await loop.run_in_executor(self._analytics_executor, query)

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
        loop = asyncio.get_running_loop()
        analytics = self._analytics_client
        if analytics is not None:
            await loop.run_in_executor(self._analytics_executor, analytics.close)
        self._analytics_executor.shutdown(wait=True)
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
