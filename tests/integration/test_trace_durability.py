"""A trace published while the tracer is down is written once it is back (JetStream holds it)."""

from __future__ import annotations

import openai

from launcher.stack import Stack
from tests.conftest import sql, trace_row, wait_for


def test_trace_published_while_tracer_down_is_written_after_restart(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"], max_retries=0)
    stack.stop_service("tracer")
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "while the tracer sleeps"}])
        assert raw.http_response.status_code == 200
        request_id = raw.headers["x-request-id"]
    finally:
        stack.start_service("tracer")
    row = wait_for(lambda: trace_row(stack, request_id), timeout=30)
    assert row["status_code"] == 200 and row["model"] == "gpt-4o-mini"
    rows = sql(stack, "SELECT count() AS n FROM traces FINAL WHERE request_id = {id:String}", {"id": request_id})
    assert rows == [{"n": 1}]
