"""Shared fixtures: one real Routeur stack (NATS, services, embedded ClickHouse, emulator) per session."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from launcher.ceph import S3Endpoint
from launcher.stack import Stack, StackConfig

pytest_plugins = ["tests.fixtures.ceph", "tests.fixtures.emulator"]

T = TypeVar("T")


STACK_BUCKET = "routeur-payloads"


async def streamed_text(chunks: AsyncIterable[Any]) -> str:
    """The assistant text of an `openai` SDK chat stream."""
    text = ""
    async for chunk in chunks:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    return text


def running_stack(stack: Stack) -> Iterator[Stack]:
    """A fixture's body: start `stack` (stopping what did start if that fails), yield it, stop it."""
    try:
        stack.start()
    except RuntimeError:
        stack.stop()
        raise
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Endpoint) -> Iterator[Stack]:
    """The whole system as separate processes, the emulator as every provider, payload archives in radosgw."""
    data_dir: Path = tmp_path_factory.mktemp("routeur")
    running = Stack(StackConfig(data_dir=data_dir, proxy_port=0, emulator="on", proxies=2,
                                object_store_url=f"s3://{STACK_BUCKET}",
                                extra_env={"TRACER_FLUSH_INTERVAL_S": "0.05", "LOG_LEVEL": "INFO",
                                           "PROXY_MAX_BODY_BYTES": str(1 << 20),
                                           "ROUTER_BREAKER_COOLDOWN_S": "2",
                                           # the fault checks read usage_minute within seconds of a fault: the
                                           # tracer's reconciler checks suspect minutes 1 s after marking them
                                           "TRACER_RECONCILE_DELAY_S": "1", "TRACER_RECONCILE_SUSPECT_S": "3",
                                           "S3_ENDPOINT_URL": s3_endpoint.url,
                                           "S3_ACCESS_KEY": s3_endpoint.access_key,
                                           "S3_SECRET_KEY": s3_endpoint.secret_key,
                                           "S3_REGION": s3_endpoint.region}))
    yield from running_stack(running)


def wait_for(check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll `check()` until it returns something truthy; fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def http_json(method: str, url: str, *, token: str | None = None, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """A plain HTTP call returning (status, decoded JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def sql(stack: Stack, query: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows from ClickHouse through the tracer's read-only SQL endpoint, as dicts."""
    status, body = http_json("POST", f"{stack.children['tracer'].url}/v1/sql",
                             token=stack.secrets["ROUTEUR_ADMIN_TOKEN"],
                             body={"query": query, "parameters": parameters or {}})
    assert status == 200, body
    return [dict(zip(body["columns"], row, strict=True)) for row in body["rows"]]


def trace_row(stack: Stack, request_id: str) -> dict[str, Any] | None:
    rows = sql(stack, "SELECT * FROM traces FINAL WHERE request_id = {id:String}", {"id": request_id})
    return rows[0] if rows else None
