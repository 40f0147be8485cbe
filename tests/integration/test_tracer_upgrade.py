"""Upgrading a database that only has migration 1: the rollup is created and backfilled exactly once.

Its own module: chdb allows one open data path per process, and the rollup module holds another.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from proto.trace import TraceEvent
from services.tracer import rows, schema
from services.tracer.store import TraceStore
from tests.integration.test_tracer_rollups import Harness, event, rollup_vs_raw

V1_COLUMNS = [c for c in rows.COLUMNS if c not in ("cache_write_tokens", "cache_write_1h_tokens")]
"""What a writer of migration 1's table inserted (the cache-write columns came with migration 13)."""


def v1_columns(events: list[TraceEvent]) -> list[list[Any]]:
    return [column for name, column in zip(rows.COLUMNS, rows.to_columns(events), strict=True) if name in V1_COLUMNS]


def test_upgrade_from_v1_backfills_the_rollup_once(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    store = TraceStore(f"chdb:///{tmp_path}")
    client = loop.run_until_complete(store._run(store._connect))
    client.command(schema.MIGRATIONS_TABLE)
    client.command(schema.MIGRATIONS[0][1])
    client.insert("schema_migrations", [[1]], column_names=["version"])
    old = [event(i) for i in range(50)]
    client.insert("traces", v1_columns(old), column_names=V1_COLUMNS, column_oriented=True)
    client.insert("traces", v1_columns(old[:5]), column_names=V1_COLUMNS,  # a pre-upgrade duplicate
                  column_oriented=True)
    loop.run_until_complete(store.open(ttl_days=3650))
    loop.run_until_complete(store.open(ttl_days=3650))  # idempotent
    h = Harness(store, loop)
    raw, rolled = rollup_vs_raw(h)
    assert raw[0] == 50 and raw == rolled
    loop.run_until_complete(store.close())
    loop.close()
