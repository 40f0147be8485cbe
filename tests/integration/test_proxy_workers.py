"""The proxy as two worker processes on one port (PROXY_WORKERS=2, SO_REUSEPORT): both serve, every request
has one trace and one settlement, a dead worker is replaced, and neither SIGTERM nor a killed supervisor
leaves a worker behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import nats
import openai
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from launcher import procs
from launcher.stack import Stack, StackConfig
from proto import subjects
from proto.billing import decode_event, settlements_in
from tests.conftest import http_json, running_stack, sql, streamed_text, wait_for

REQUESTS = 200
STREAMS = 30
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Which worker are you?"}]}


@pytest.fixture(scope="module")
def workers_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own whose proxy runs two workers; payload archives in a directory (no S3 needed)."""
    running = Stack(StackConfig(data_dir=tmp_path_factory.mktemp("routeur-workers"), proxy_port=0, emulator="on",
                                proxy_workers=2, background_nice=10,
                                extra_env={"TRACER_FLUSH_INTERVAL_S": "0.05", "LOG_LEVEL": "INFO"}))
    yield from running_stack(running)


# ------------------------------------------------------------------------------------------------ helpers


def log_lines(stack: Stack) -> list[dict[str, Any]]:
    """The proxy log (supervisor and workers share it), every line whole JSON."""
    lines = stack.children["proxy"].log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def current_run(stack: Stack, supervisor_pid: int | None = None) -> list[dict[str, Any]]:
    """The log lines since the supervisor (the current proxy process unless named) started."""
    if supervisor_pid is None:
        supervisor = stack.children["proxy"].proc
        assert supervisor is not None
        supervisor_pid = supervisor.pid
    lines = log_lines(stack)
    starts = [i for i, line in enumerate(lines)
              if line["event"] == "workers_starting" and line["pid"] == supervisor_pid]
    return lines[starts[-1]:] if starts else []


def worker_pids(stack: Stack, supervisor_pid: int | None = None) -> dict[int, int]:
    """Worker index -> pid of the latest worker the supervisor started at that index."""
    return {line["worker"]: line["pid"] for line in current_run(stack, supervisor_pid)
            if line["event"] == "worker_started"}


def parent_of(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def is_proxy_process(pid: int) -> bool:
    """Alive and still a `python -m services.proxy` (a reused pid is someone else)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"services.proxy" in argv and state != "Z"


def admin(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    status, data = http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                             token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)
    assert status < 300, data
    return data


async def fresh_connection_requests(url: str, key: str, n: int, concurrency: int = 16) -> list[tuple[int, str]]:
    """`n` chat requests, each on a new TCP connection (so the kernel picks a worker for each one)."""
    results: list[tuple[int, str]] = []
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {key}"}) as session:

        async def one() -> None:
            async with gate, session.post(f"{url}/v1/chat/completions", json=BODY) as response:
                await response.read()
                results.append((response.status, response.headers["x-request-id"]))

        await asyncio.gather(*(one() for _ in range(n)))
    return results


async def ledger_settlements(stack: Stack, org: str) -> Counter[str]:
    """Request id -> number of settlements of `org` in ROUTEUR_LEDGER (lone or in a SettledBatch)."""
    nc = await nats.connect(stack.nats.url)
    found: Counter[str] = Counter()
    try:
        js = nc.jetstream()
        last = int((await js.stream_info(subjects.LEDGER_STREAM)).state.last_seq)
        sub = await js.subscribe(subjects.LEDGER_SUBJECT, stream=subjects.LEDGER_STREAM, ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                                 pending_msgs_limit=-1, pending_bytes_limit=-1)
        seq = 0
        while seq < last:
            msg = await sub.next_msg(timeout=10)
            seq = msg.metadata.sequence.stream
            for event in settlements_in(decode_event(msg.data)):
                if event.organization_id == org:
                    found[event.request_id] += 1
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


# -------------------------------------------------------------------------------------------------- tests


async def test_both_workers_serve_and_each_request_is_traced_and_settled_once(workers_stack: Stack) -> None:
    stack = workers_stack
    supervisor = stack.children["proxy"].proc
    assert supervisor is not None
    pids = worker_pids(stack)
    assert sorted(pids) == [0, 1] and len(set(pids.values())) == 2
    assert all(parent_of(pid) == supervisor.pid and is_proxy_process(pid) for pid in pids.values())
    started = {line["worker"]: line["pid"] for line in current_run(stack) if line["event"] == "proxy_started"}
    assert started == pids, "each worker is a full proxy that reported itself started"

    org = f"org_{uuid.uuid4().hex[:10]}"
    admin(stack, "POST", "/organizations", {"id": org})
    admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": "10"})
    key = admin(stack, "POST", f"/organizations/{org}/keys", {"name": "workers"})["secret"]
    results = await fresh_connection_requests(stack.proxy_url, key, REQUESTS)
    assert [status for status, _ in results] == [200] * REQUESTS
    ids = {request_id for _, request_id in results}
    assert len(ids) == REQUESTS

    def served_by() -> dict[str, list[int]] | None:
        found: dict[str, list[int]] = {}
        for line in log_lines(stack):
            if line["event"] == "request" and line.get("request_id") in ids:
                found.setdefault(line["request_id"], []).append(line["worker"])
        return found if len(found) == REQUESTS else None

    workers = wait_for(served_by, timeout=10)
    assert all(len(found) == 1 for found in workers.values()), "one log line per request, from one worker"
    per_worker = Counter(found[0] for found in workers.values())
    assert set(per_worker) == {0, 1} and min(per_worker.values()) >= 20, per_worker  # the kernel spread them

    def books() -> dict[str, Any] | None:
        rows = sql(stack, "SELECT request_id, cost_usd FROM traces FINAL WHERE organization_id = {org:String}",
                   {"org": org})
        view = admin(stack, "GET", f"/organizations/{org}")
        cost = sum((Decimal(str(row["cost_usd"])) for row in rows), Decimal(0))
        done = len(rows) == REQUESTS and Decimal(str(view["spent_usd"])) == cost
        return {"rows": rows, "cost": cost} if done else None

    stored = wait_for(books, timeout=30)
    assert Counter(row["request_id"] for row in stored["rows"]) == Counter(ids), "exactly one trace per request"
    assert stored["cost"] > 0
    settled = await ledger_settlements(stack, org)
    assert settled == Counter(ids), "exactly one settlement per request"


async def test_a_killed_worker_is_replaced_while_the_other_serves(workers_stack: Stack) -> None:
    stack = workers_stack
    supervisor = stack.children["proxy"].proc
    assert supervisor is not None
    before = worker_pids(stack)
    os.kill(before[1], signal.SIGKILL)
    # Until it is gone, connections the kernel queued to its socket are reset (SO_REUSEPORT's way); the
    # supervisor's worker_exited means it reaped it, so its socket is closed.
    wait_for(lambda: any(line["event"] == "worker_exited" and line["pid"] == before[1] for line in current_run(stack)))
    key = stack.secrets["ROUTEUR_API_KEY"]
    # worker 0 keeps the port open throughout: requests on new connections still succeed
    statuses = [status for status, _ in await fresh_connection_requests(stack.proxy_url, key, 20, concurrency=4)]
    assert statuses == [200] * 20

    def replaced() -> dict[int, int] | None:
        now = worker_pids(stack)
        restarted = any(line["event"] == "proxy_started" and line["pid"] == now.get(1) for line in current_run(stack))
        return now if now.get(1) != before[1] and restarted else None

    after = wait_for(replaced, timeout=30)
    assert after[0] == before[0] and parent_of(after[1]) == supervisor.pid
    assert supervisor.poll() is None, "the supervisor itself keeps running"
    exits = [line for line in current_run(stack) if line["event"] == "worker_exited"]
    assert exits[-1]["pid"] == before[1] and exits[-1]["exit_code"] == -signal.SIGKILL and exits[-1]["restart"]


async def test_a_killed_supervisor_leaves_no_worker_behind(workers_stack: Stack) -> None:
    stack = workers_stack
    supervisor = stack.children["proxy"].proc
    assert supervisor is not None
    workers = worker_pids(stack)
    os.kill(supervisor.pid, signal.SIGKILL)  # the supervisor alone, not its process group
    wait_for(lambda: not any(is_proxy_process(pid) for pid in workers.values()), timeout=30)

    def back() -> Any:  # the launcher restarts the proxy; its new workers get the port
        current = stack.children["proxy"].proc
        return current is not None and current.pid != supervisor.pid and len(worker_pids(stack)) == 2 \
            and procs.http_ok(f"{stack.proxy_url}/readyz")
    wait_for(back, timeout=60)
    statuses = [status for status, _ in await fresh_connection_requests(stack.proxy_url, stack.secrets[
        "ROUTEUR_API_KEY"], 20, concurrency=4)]
    assert statuses == [200] * 20


async def test_sigterm_drains_every_worker_and_stops_them_all(workers_stack: Stack) -> None:
    stack = workers_stack
    emulator = stack.children["emulator"].url
    wait_for(lambda: len(worker_pids(stack)) == 2 and all(map(is_proxy_process, worker_pids(stack).values())))
    supervisor = stack.children["proxy"].proc
    assert supervisor is not None
    pids = worker_pids(stack)
    http_json("PUT", f"{emulator}/_emulator/faults/gpt-4.1-mini", body={"chunk_interval_ms": 100})
    ids: list[str] = []
    started = asyncio.Event()

    async def one(index: int) -> str:
        # a client of its own per stream: a connection of its own, so the kernel picks the worker
        client = openai.AsyncOpenAI(base_url=f"{stack.proxy_url}/v1", api_key=stack.secrets["ROUTEUR_API_KEY"],
                                    max_retries=0, timeout=60)
        async with client:
            response = await client.chat.completions.with_raw_response.create(
                model="gpt-4.1-mini", stream=True, messages=[{"role": "user", "content": f"drain {index}"}])
            ids.append(response.headers["x-request-id"])
            if len(ids) == STREAMS:
                started.set()
            return await streamed_text(response.parse())

    try:
        tasks = [asyncio.create_task(one(i)) for i in range(STREAMS)]
        await asyncio.wait_for(started.wait(), 30)
        stopping = time.monotonic()
        await asyncio.to_thread(stack.stop_service, "proxy")
        texts = await asyncio.gather(*tasks)
    finally:
        http_json("DELETE", f"{emulator}/_emulator/faults")
    assert time.monotonic() - stopping < 30 and supervisor.returncode == 0
    assert len(texts) == STREAMS and all(len(text) > 20 for text in texts), "every stream ran to its end"
    assert not any(is_proxy_process(pid) for pid in pids.values()), "no worker outlives the supervisor"

    lines = current_run(stack, supervisor.pid)
    served = Counter(line["worker"] for line in lines if line["event"] == "request" and line["request_id"] in ids)
    assert set(served) == {0, 1}, f"both workers had streams in flight at SIGTERM: {served}"
    stopped = {line["worker"] for line in lines if line["event"] == "proxy_stopped"}
    assert stopped == {0, 1}, "each worker drained and stopped cleanly"
    assert [line["exit_code"] for line in lines if line["event"] == "worker_stopped"] == [0, 0]
    rows = wait_for(lambda: (lambda r: r if r[0]["n"] == STREAMS else None)(sql(
        stack, "SELECT count() AS n FROM traces FINAL WHERE has({ids:Array(String)}, request_id) AND status_code = 200",
        {"ids": ids})), timeout=30)
    assert rows[0]["n"] == STREAMS


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_batch_consumers_yield_the_cpu_to_the_proxy(workers_stack: Stack) -> None:
    """background_nice: the tracer and archiver run at nice 10, every other service at the launcher's own."""
    children = workers_stack.children
    pids = {name: child.proc.pid for name, child in children.items() if child.proc is not None}
    assert _nice(pids["tracer"]) == _nice(pids["archiver"]) == os.nice(0) + 10
    assert _nice(pids["billing"]) == _nice(pids["router"]) == os.nice(0)  # (the proxy was restarted above)
