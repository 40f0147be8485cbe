"""The one place that talks to ClickHouse (embedded chdb or a server), on a single worker thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from services.tracer import rows, schema

Result = tuple[list[str], list[tuple[Any, ...]]]


class TraceStore:
    """Serialises every ClickHouse call onto one thread: chdb's client is synchronous."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: Client | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._types: list[str] | None = None  # `traces` column types in rows.COLUMNS order, read once

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _connect(self) -> Client:
        if self._client is None:
            self._client = clickhouse_connect.get_client(dsn=self._url)
        return self._client

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

    async def select(self, sql: str, params: dict[str, Any], *, readonly: bool = False) -> Result:
        settings = {"readonly": 1} if readonly else None

        def query() -> Result:
            result = self._connect().query(sql, parameters=params, settings=settings)
            return list(result.column_names), [tuple(row) for row in result.result_rows]

        return await self._run(query)  # type: ignore[no-any-return]

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
        client = self._client
        if client is not None:
            await self._run(client.close)
        self._executor.shutdown(wait=True)
