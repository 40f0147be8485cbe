"""Pure trace ↔ row mapping and the parameterized logs query."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from proto.trace import Attempt, LogsQuery, TraceEvent
from services.tracer import rows

EVENT = TraceEvent(
    request_id="01JABCDEFGHJKMNPQRSTVWXYZ0", timestamp_ms=1_763_900_000_123, organization_id="org_1",
    api_key_id="key_1", endpoint="/v1/chat/completions", requested_model="gpt-4o-mini", model="gpt-4o-mini",
    provider="openai", upstream_model="gpt-4o-mini", route_reason="default", status_code=200, stream=True,
    latency_ms=12.5, upstream_latency_ms=10.0, prompt_tokens=13, completion_tokens=7, total_tokens=20,
    cost_usd=Decimal("0.00000615"), ttft_ms=3.0, route="openai/gpt-4o-mini",
    attempts=(Attempt("openai", "gpt-4o-mini", 200, 10.0),), payload_url="https://example/x?sig=1")


def test_columns_round_trip_drops_only_the_payload_url() -> None:
    other = TraceEvent(**{**{f: getattr(EVENT, f) for f in EVENT.__struct_fields__}, "request_id": "other",
                          "route": None, "attempts": ()})
    columns = rows.to_columns([EVENT, other])
    assert len(columns) == len(rows.COLUMNS) and all(len(column) == 2 for column in columns)
    assert "https://example/x?sig=1" not in map(str, (value for column in columns for value in column))
    ts = rows.COLUMNS.index("ts")
    assert columns[ts] == [EVENT.timestamp_ms, EVENT.timestamp_ms]  # DateTime64(3) ticks
    assert columns[rows.COLUMNS.index("route")] == ["openai/gpt-4o-mini", ""]
    assert columns[rows.COLUMNS.index("attempts")] == [[("openai", "gpt-4o-mini", 200, 10.0, None)], []]
    # what SELECT gives back for the first row: ts as a datetime
    row = [column[0] for column in columns]
    row[ts] = datetime.fromtimestamp(EVENT.timestamp_ms / 1000, UTC)
    assert rows.from_row(row) == TraceEvent(**{**{f: getattr(EVENT, f) for f in EVENT.__struct_fields__},
                                               "payload_url": None})


def test_batch_dedups_request_ids_keeping_the_first() -> None:
    later = TraceEvent(**{**{f: getattr(EVENT, f) for f in EVENT.__struct_fields__}, "status_code": 500})
    assert rows.unique([EVENT, later, EVENT]) == [EVENT]


def test_logs_query_never_puts_user_values_in_sql() -> None:
    hostile = "x' OR 1=1 --"
    sql, params = rows.logs_query(LogsQuery(organization_id=hostile, model=hostile, api_key_id=hostile,
                                            provider=hostile, status_code=500, limit=10_000,
                                            cursor="123:01JABCDEFGHJKMNPQRSTVWXYZ0"))
    assert hostile not in sql and "OR 1=1" not in sql
    assert params["model"] == hostile and params["limit"] == rows.MAX_PAGE and params["cursor_ms"] == 123
