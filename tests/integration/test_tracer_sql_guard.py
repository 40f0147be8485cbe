"""`POST /v1/sql` refuses every statement that is not one read-only query, and no refused statement can wedge the
tracer's ingest (a refused INSERT used to leave the shared ClickHouse session read-only: every later insert failed)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from launcher.stack import Stack
from tests.conftest import http_json, trace_row, wait_for

# Harmless if one ever ran: probe tables only, a journal row already closed, no real row deleted.
REFUSED = (
    "INSERT INTO rollup_repairs (organization_id, minute, version, done) VALUES ('org_sql_guard', 0, 0, 1)",
    "insert into rollup_repairs (organization_id, minute, version, done) select 'org_sql_guard', 0, 0, 1",
    "INSERT INTO FUNCTION file('sql_guard_probe.tsv', 'TSV', 'x UInt8') VALUES (1)",
    "ALTER TABLE rollup_repairs DELETE WHERE organization_id = 'org_sql_guard'",
    "DELETE FROM rollup_repairs WHERE organization_id = 'org_sql_guard'",
    "CREATE TABLE IF NOT EXISTS sql_guard_probe (x UInt8) ENGINE = Memory",
    "DROP TABLE IF EXISTS sql_guard_probe",
    "TRUNCATE TABLE IF EXISTS sql_guard_probe",
    "SET readonly = 0",
    "OPTIMIZE TABLE rollup_repairs",
    "SYSTEM FLUSH LOGS",
    "SELECT 1; DROP TABLE IF EXISTS sql_guard_probe",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "/* a comment first */ INSERT INTO rollup_repairs (organization_id, minute, version, done) "
    "VALUES ('org_sql_guard', 0, 0, 1)",
)


def _post(stack: Stack, query: str) -> tuple[int, dict[str, object]]:
    return http_json("POST", f"{stack.children['tracer'].url}/v1/sql", token=stack.secrets["ROUTEUR_ADMIN_TOKEN"],
                     body={"query": query})


@pytest.mark.parametrize("query", ["SELECT count() AS n FROM traces", "  select 1;  ", "WITH 2 AS x SELECT x",
                                   "EXPLAIN SELECT 1", "DESCRIBE TABLE traces", "SHOW TABLES"])
def test_read_only_statements_are_answered(stack: Stack, query: str) -> None:
    status, body = _post(stack, query)
    assert status == 200, body
    assert body["columns"]


def test_write_statements_are_refused_and_traces_keep_being_stored(stack: Stack, tmp_path: Path) -> None:
    outfile = tmp_path / "sql_guard_probe.tsv"
    statements = (*REFUSED, f"SELECT 1 INTO OUTFILE '{outfile}'")  # read-only mode alone let this one write
    answered = {query: _post(stack, query) for query in statements}
    # Whatever the endpoint answered, the next request's trace must be stored as usual.
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"],
                           max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "after the refused statements"}])
    assert raw.http_response.status_code == 200
    request_id = raw.headers["x-request-id"]
    row = wait_for(lambda: trace_row(stack, request_id), timeout=30)
    assert row["status_code"] == 200 and row["model"] == "gpt-4o-mini"
    status, ready = http_json("GET", f"{stack.children['tracer'].url}/readyz")
    assert status == 200 and ready["ready"] is True and ready["last_insert_error"] is None, ready
    for query, (status, body) in answered.items():
        error = body.get("error")
        assert status == 400 and isinstance(error, dict), (query, body)
        assert (error["type"], error["code"]) == ("invalid_request_error", "read_only_sql"), (query, body)
    assert not outfile.exists()
