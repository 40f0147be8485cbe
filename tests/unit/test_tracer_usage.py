"""Pure usage/logs query builders: parameters only, enum → fixed fragment mapping, validation."""

from __future__ import annotations

import pytest

from proto import codec
from proto.trace import LogsQuery, UsageQuery, UsageReply
from services.tracer import rows, schema, usage
from services.tracer.rows import QueryError

HOSTILE = "x' OR 1=1 --"
NOW = 1_763_900_123_456


def test_usage_query_puts_user_values_only_in_parameters() -> None:
    query = UsageQuery(organization_id=HOSTILE, api_key_id=HOSTILE, model=HOSTILE, provider=HOSTILE,
                       group_by="key", bucket="hour", since_ms=NOW - 3_600_000, until_ms=NOW)
    since, until = usage.resolve(query, NOW)
    for sql, params in (usage.usage_query(query, since, until), usage.totals_query(query, since, until)):
        assert HOSTILE not in sql and "OR 1=1" not in sql and "FROM usage_hour" in sql and "traces" not in sql
        assert params["model"] == HOSTILE and params["organization_id"] == HOSTILE
        assert params["since_s"] == since // 1000 and params["until_s"] == until // 1000


@pytest.mark.parametrize("bucket, table, width", [("minute", "usage_minute", 60_000),
                                                   ("hour", "usage_hour", 3_600_000),
                                                   ("day", "usage_day", 86_400_000)])
def test_each_bucket_reads_its_own_rollup_over_whole_buckets(bucket: str, table: str, width: int) -> None:
    query = UsageQuery(bucket=bucket, since_ms=NOW - 3 * width - 1234, until_ms=NOW)
    since, until = usage.resolve(query, NOW)
    assert since % width == 0 and until % width == 0 and since <= NOW - 3 * width - 1234 and until >= NOW
    assert until - since in (4 * width, 5 * width)
    for sql, params in (usage.usage_query(query, since, until), usage.totals_query(query, since, until)):
        assert f"FROM {table} " in sql and sql.count("FROM usage_") == 1
        assert (params["since_s"], params["until_s"]) == (since // 1000, until // 1000)


@pytest.mark.parametrize("group_by, column", [("model", "toString(model)"), ("key", "toString(api_key_id)"),
                                              ("provider", "toString(provider)")])
@pytest.mark.parametrize("bucket, fn", [("minute", "toStartOfMinute"), ("hour", "toStartOfHour"),
                                        ("day", "toStartOfDay")])
def test_group_and_bucket_mapping(group_by: str, column: str, bucket: str, fn: str) -> None:
    query = UsageQuery(group_by=group_by, bucket=bucket, since_ms=NOW - 3_600_000, until_ms=NOW)
    sql, params = usage.usage_query(query, *usage.resolve(query, NOW))
    assert f"{fn}(minute)" in sql and f"{column} AS grp" in sql and "organization_id" not in params


def test_range_defaults_to_the_last_day_on_whole_buckets() -> None:
    since, until = usage.resolve(UsageQuery(bucket="minute"), NOW)
    assert until >= NOW and until - NOW < 60_000 and since % 60_000 == 0 and until % 60_000 == 0
    assert until - since in (usage.DEFAULT_RANGE_MS, usage.DEFAULT_RANGE_MS + 60_000)
    since, until = usage.resolve(UsageQuery(), NOW)  # bucket "hour"
    assert since % 3_600_000 == 0 and until % 3_600_000 == 0 and until - NOW < 3_600_000


@pytest.mark.parametrize("query, message", [
    (UsageQuery(group_by="model; DROP TABLE traces"), "'group_by' must be one of model, key, provider"),
    (UsageQuery(bucket="week"), "'bucket' must be one of minute, hour, day"),
    (UsageQuery(since_ms=NOW, until_ms=NOW), "'since_ms' must be before 'until_ms'"),
    (UsageQuery(until_ms=-5), "'until_ms' must be Unix milliseconds"),
    (UsageQuery(since_ms=0, until_ms=NOW, bucket="minute"), "buckets"),
    (UsageQuery(api_key_id="k" * 300), "'api_key_id' must be at most 256"),
    (UsageQuery(model="a\x00b"), "'model'"),
])
def test_usage_validation_messages(query: UsageQuery, message: str) -> None:
    with pytest.raises(QueryError, match=message.replace("(", r"\(")):
        usage.resolve(query, NOW)


def test_logs_query_new_filters_are_parameters_or_fixed_fragments() -> None:
    sql, params = rows.logs_query(LogsQuery(route_reason=HOSTILE, has_fallback=True, since_ms=1, until_ms=2))
    assert HOSTILE not in sql and params["route_reason"] == HOSTILE
    assert "fallback IS NOT NULL" in sql and params["since_ms"] == 1 and params["until_ms"] == 2
    sql, _ = rows.logs_query(LogsQuery(has_fallback=False))
    assert "fallback IS NULL" in sql
    sql, params = rows.logs_query(LogsQuery())
    assert "fallback" not in sql.split("WHERE")[1] and set(params) == {"limit"}


@pytest.mark.parametrize("query", [LogsQuery(since_ms=5, until_ms=5), LogsQuery(status_code=70_000),
                                   LogsQuery(cursor=HOSTILE), LogsQuery(cursor="12:"),
                                   LogsQuery(model="m" * 257), LogsQuery(since_ms=-1)])
def test_logs_query_validation(query: LogsQuery) -> None:
    with pytest.raises(QueryError):
        rows.logs_query(query)


def test_old_logs_query_messages_still_decode_and_new_ones_round_trip() -> None:
    decoded = codec.decode(b'{"organization_id": "org", "limit": 5}', LogsQuery)  # yesterday's message
    assert decoded.has_fallback is None and decoded.route_reason is None and decoded.limit == 5
    reply = UsageReply(error="bad query")
    assert codec.decode(codec.encode(reply), UsageReply) == reply


def test_dedup_token_depends_on_ids_and_order() -> None:
    assert rows.dedup_token(["a", "b"]) == rows.dedup_token(["a", "b"]) != rows.dedup_token(["b", "a"])
    assert rows.dedup_token(["ab"]) != rows.dedup_token(["a", "b"])


def test_migrations_are_append_only_and_ordered() -> None:
    versions = [version for version, _ in schema.MIGRATIONS]
    assert versions == sorted(set(versions)) and versions[:5] == [1, 2, 3, 4, 5]
    assert "usage_minute" in str(schema.MIGRATIONS[2][1]) and "IF NOT EXISTS" in str(schema.MIGRATIONS[3][1])
