"""SIGTERM to the proxy while 50 streams are in flight: every stream completes and is traced."""

from __future__ import annotations

import asyncio

import openai

from launcher.stack import Stack
from tests.conftest import http_json, sql, streamed_text, wait_for

STREAMS = 50


async def test_sigterm_drains_in_flight_streams(stack: Stack) -> None:
    emulator = stack.children["emulator"].url
    http_json("PUT", f"{emulator}/_emulator/faults/gpt-4.1-mini", body={"chunk_interval_ms": 100})
    client = openai.AsyncOpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"],
                                max_retries=0, timeout=60)
    started = asyncio.Event()
    ids: list[str] = []

    async def one(index: int) -> str:
        response = await client.chat.completions.with_raw_response.create(
            model="gpt-4.1-mini", stream=True, messages=[{"role": "user", "content": f"drain test {index}"}])
        ids.append(response.headers["x-request-id"])
        if len(ids) == STREAMS:
            started.set()
        return await streamed_text(response.parse())

    try:
        tasks = [asyncio.create_task(one(i)) for i in range(STREAMS)]
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.to_thread(stack.stop_service, "proxy")
        texts = await asyncio.gather(*tasks)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
        await asyncio.to_thread(stack.start_service, "proxy")
    assert len(texts) == STREAMS and all(len(text) > 20 for text in texts)
    rows = wait_for(lambda: (lambda r: r if r[0]["n"] == STREAMS else None)(sql(
        stack, "SELECT count() AS n FROM traces FINAL WHERE has({ids:Array(String)}, request_id) AND status_code = 200",
        {"ids": ids})), timeout=30)
    assert rows[0]["n"] == STREAMS
