"""Issue 18's acceptance on the whole stack: every kind of statement a user may send to `/v1/sql` — writes, DDL,
`SET`, table functions, system tables, huge scans, some abandoned by their clients mid-way — while the proxy serves
a steady load: each is refused or ends by its limit, and every trace is still stored within seconds."""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import openai

from launcher.stack import Stack
from tests.conftest import http_json, sql, wait_for

REFUSED = (  # by the gate, 400 read_only_sql
    "INSERT INTO rollup_repairs (organization_id, minute, version, done) VALUES ('org_stack_probe', 0, 0, 1)",
    "ALTER TABLE traces DELETE WHERE 1",
    "CREATE TABLE stack_probe (x UInt8) ENGINE = Memory",
    "DROP TABLE traces",
    "TRUNCATE TABLE usage_minute",
    "SET readonly = 0",
    "SET max_execution_time = 0",
    "SELECT count() FROM numbers(1e12) SETTINGS max_rows_to_read = 0",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/x', 'CSV', 'x String')",
    "SELECT * FROM s3('http://127.0.0.1:1/b/x.csv', 'CSV', 'x String')",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
    "SYSTEM FLUSH LOGS",
    "KILL QUERY WHERE 1",
)
LIMITED = (  # by a limit, 400 query_limit_exceeded
    "SELECT count() FROM numbers(1e12)",
    "SELECT count() FROM system.numbers WHERE number % 7 = 3",
    "SELECT number FROM system.numbers",
    "SELECT * FROM system.numbers_mt LIMIT 100000000",
)
ABANDONED = "SELECT count() FROM system.numbers WHERE sipHash64(number) = 11"
LOAD_S = 20.0
RPS = 20


def _post(stack: Stack, query: str) -> tuple[int, dict[str, object]]:
    """The answer, retried as a 503 analytics_busy asks (all the bounded sessions were taken: Retry-After)."""
    deadline = time.monotonic() + 90
    while True:
        status, body = http_json("POST", f"{stack.children['tracer'].url}/v1/sql",
                                 token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body={"query": query})
        if status != 503 or time.monotonic() > deadline:
            return status, body
        assert body["error"]["code"] == "analytics_busy", body
        time.sleep(1)


def _abandon(stack: Stack, query: str, after_s: float) -> None:
    """Send the query, then close the connection before any answer (a client that went away)."""
    url = urllib.parse.urlsplit(stack.children["tracer"].url)
    body = ('{"query": "' + query + '"}').encode()
    head = (f"POST /v1/sql HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {stack.secrets['ROUTEUR_ADMIN_TOKEN']}\r\nContent-Length: {len(body)}\r\n\r\n")
    with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
        connection.sendall(head.encode() + body)
        time.sleep(after_s)


def _load(stack: Stack, stop: threading.Event, ids: list[str], failures: list[str]) -> None:
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"],
                           max_retries=0)
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "analytics under load"}])
            ids.append(raw.headers["x-request-id"])
        except Exception as exc:  # noqa: BLE001 (counted: the assertion below says what failed)
            failures.append(type(exc).__name__)
        next_at += 1 / RPS
        time.sleep(max(0.0, next_at - time.monotonic()))


def _abandoned_running(stack: Stack) -> int:
    """How many of the abandoned scans still run (the pattern is built so that this query does not match it)."""
    rows = sql(stack, "SELECT count() AS n FROM system.processes WHERE position(query, concat('sipHash64(number) ', "
                      "'= 11')) > 0")
    return int(rows[0]["n"])


def _stored(stack: Stack, ids: list[str]) -> int:
    query = "SELECT count() AS n FROM traces FINAL WHERE request_id IN {ids:Array(String)}"
    status, body = http_json("POST", f"{stack.children['tracer'].url}/v1/sql",
                             token=stack.secrets["ROUTEUR_ADMIN_TOKEN"],
                             body={"query": query, "parameters": {"ids": ids}})
    assert status == 200 and body["columns"] == ["n"], (status, body)
    return int(body["rows"][0][0])


def _log_count(stack: Stack, event: str) -> int:
    return stack.children["tracer"].log_path.read_text(encoding="utf-8", errors="replace").count(f'"{event}"')


def test_every_kind_of_statement_is_refused_or_limited_while_ingest_keeps_storing(stack: Stack) -> None:
    stop = threading.Event()
    ids: list[str] = []
    failures: list[str] = []
    loaders = [threading.Thread(target=_load, args=(stack, stop, ids, failures)) for _ in range(2)]
    abandoned_before = _log_count(stack, "sql_query_abandoned")
    started = time.monotonic()
    for loader in loaders:
        loader.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            abandoned = [pool.submit(_abandon, stack, ABANDONED, 0.5 + i) for i in range(3)]
            answered = {query: pool.submit(_post, stack, query) for query in (*REFUSED, *LIMITED)}
            for future in abandoned:
                future.result(timeout=30)
            # an abandoned scan is killed at once, not left to run to its row limit (seconds of CPU)
            wait_for(lambda: _abandoned_running(stack) == 0, timeout=3)
            outcomes = {query: future.result(timeout=120) for query, future in answered.items()}
        while time.monotonic() - started < LOAD_S:
            time.sleep(0.2)
    finally:
        stop.set()
        for loader in loaders:
            loader.join(timeout=30)
    load_ended = time.monotonic()
    for query, (status, body) in outcomes.items():
        error = body.get("error")
        assert status == 400 and isinstance(error, dict), (query, status, body)
        expected = "read_only_sql" if query in REFUSED else "query_limit_exceeded"
        assert error["code"] == expected, (query, body)
    assert not failures, failures
    assert len(ids) >= LOAD_S * RPS * 0.5, len(ids)  # the load really ran (≥ half the planned requests)
    # every trace stored within seconds of the load's end: ingest never stopped
    rows = wait_for(lambda: _stored(stack, ids) == len(ids) or None, timeout=15)
    assert rows is True, _stored(stack, ids)
    assert time.monotonic() - load_ended < 15
    assert _log_count(stack, "sql_query_abandoned") - abandoned_before == 3
    assert sql(stack, "SELECT count() AS n FROM rollup_repairs WHERE organization_id = 'org_stack_probe'")[0]["n"] == 0
    status, ready = http_json("GET", f"{stack.children['tracer'].url}/readyz")
    assert status == 200 and ready["ready"] is True and ready["last_insert_error"] is None, ready
