"""Callers and upstreams that misbehave: a caller that hangs up mid-stream (the upstream call is cancelled,
the request traced as 499 and settled), callers that read very slowly (the proxy does not buffer ahead of
them), and an upstream that stalls mid-stream or never answers (the read timeout ends it, traced)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from launcher.stack import Stack
from tests.conftest import http_json, sql, wait_for
from tests.soak.load import Tenant, admin, ledger_seq, new_tenant, rss_kib, settlements

MODEL = "gpt-4.1-mini"  # its only route's upstream model has the same name: the emulator's fault key
STALL_TIMEOUT_S = 2.0  # UPSTREAM_READ_TIMEOUT_S of the extra proxy the timeout tests use
WARM_UP_S, PLATEAU_S = 6.0, 10.0


def _emulator(stack: Stack) -> str:
    return stack.children["emulator"].url


def _fault(stack: Stack, model: str, plan: dict[str, Any]) -> None:
    status, body = http_json("PUT", f"{_emulator(stack)}/_emulator/faults/{model}", body=plan)
    assert status == 200, body


@pytest.fixture
def clean_emulator(stack: Stack) -> Iterator[None]:
    http_json("DELETE", f"{_emulator(stack)}/_emulator/requests")
    yield
    http_json("DELETE", f"{_emulator(stack)}/_emulator/faults")


def _upstream_entries(stack: Stack, marker: str) -> list[dict[str, Any]]:
    """What the emulator received whose prompt contains `marker`, with each stream's progress and outcome."""
    status, seen = http_json("GET", f"{_emulator(stack)}/_emulator/requests")
    assert status == 200
    return [entry for entry in seen["requests"] if entry["body"] and marker in json.dumps(entry["body"])]


def _ended_upstream(stack: Stack, marker: str) -> dict[str, Any]:
    """The emulator's entry for the stream with `marker` once that stream has ended, however it ended."""
    return wait_for(lambda: next((e for e in _upstream_entries(stack, marker) if e.get("outcome")), None), 15)


def _echo(marker: str, words: int, word: str = "tick") -> list[dict[str, str]]:
    """A prompt the emulator answers with its own text: `words` words, streamed three words a chunk."""
    return [{"role": "user", "content": f"[[echo]] {marker} " + " ".join([word] * words)}]


def _trace(stack: Stack, tenant: Tenant, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The stored trace, as GET /v1/traces/{id} answers it to the key's owner (waits until it is stored)."""
    def stored() -> dict[str, Any] | None:
        status, body = http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=tenant.secret)
        return body if status == 200 else None

    return wait_for(stored, timeout)


async def _only_settlement(stack: Stack, tenant: Tenant, after_seq: int, request_id: str) -> Decimal:
    """The cost of the one Settled event of the tenant since `after_seq`, which must be `request_id`'s."""
    async def settled() -> dict[str, list[Decimal]]:
        for _ in range(100):
            found = await settlements(stack, tenant.org, after_seq)
            if found:
                return found
            await asyncio.sleep(0.2)
        return {}

    found = await settled()
    assert found == {request_id: found.get(request_id)} and len(found[request_id]) == 1, found
    return found[request_id][0]


async def _hang_up_mid_stream(stack: Stack, tenant: Tenant, marker: str) -> tuple[str, dict[str, Any], float]:
    """Read five events of a ~70-chunk stream (one chunk every 100 ms), then close the socket.
    Returns the request id, the emulator's entry once its stream ended, and how long that took."""
    _fault(stack, MODEL, {"chunk_interval_ms": 100})
    body = {"model": MODEL, "stream": True, "messages": _echo(marker, 200)}
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"{stack.proxy_url}/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {tenant.secret}"})
        assert response.status == 200
        request_id = response.headers["x-request-id"]
        events = 0
        async for line in response.content:
            events += line.startswith(b"data: ")
            if events == 5:
                break
        response.close()  # hang up: the socket is closed under the proxy
        closed_at = time.monotonic()
    entry = await asyncio.to_thread(_ended_upstream, stack, marker)
    return request_id, entry, time.monotonic() - closed_at


async def test_caller_hanging_up_mid_stream_cancels_the_upstream_and_is_traced_as_499(
        stack: Stack, clean_emulator: None) -> None:
    tenant = new_tenant(stack, archive_payloads=False)
    after_seq = await ledger_seq(stack)
    request_id, entry, cancelled_after = await _hang_up_mid_stream(stack, tenant, f"hangup-{time.monotonic_ns()}")
    assert entry["outcome"] == "client_closed", entry["outcome"]
    assert entry["chunks_sent"] < 30, "the upstream kept streaming after the caller left"
    assert cancelled_after < 5, f"the upstream call outlived the caller by {cancelled_after:.1f}s"

    trace = _trace(stack, tenant, request_id)
    assert (trace["status_code"], trace["error_type"], trace["error_code"], trace["stream"]) == (
        499, "client_closed", "client_closed_request", True)
    assert [(a["status_code"], a["error_type"]) for a in trace["attempts"]] == [(499, "client_closed")]
    cost = Decimal(str(trace["cost_usd"]))
    assert await _only_settlement(stack, tenant, after_seq, request_id) == cost, "settled once, at the trace's cost"
    assert Decimal(str(admin(stack, "GET", f"/organizations/{tenant.org}")["spent_usd"])) == cost
    print(f"upstream cancelled {cancelled_after:.2f}s after the caller hung up, after {entry['chunks_sent']} of "
          f"~70 chunks; traced 499 with {trace['completion_tokens']} completion tokens, settled at {cost}")


async def test_a_stream_the_caller_hung_up_on_is_billed_for_what_it_received(
        stack: Stack, clean_emulator: None) -> None:
    tenant = new_tenant(stack, archive_payloads=False)
    after_seq = await ledger_seq(stack)
    request_id, _, _ = await _hang_up_mid_stream(stack, tenant, f"partial-{time.monotonic_ns()}")
    trace = _trace(stack, tenant, request_id)
    usage = {name: trace[name] for name in ("prompt_tokens", "completion_tokens", "usage_estimated", "cost_usd")}
    assert trace["prompt_tokens"] > 0 and 0 < trace["completion_tokens"] < 200, f"no partial usage: {usage}"
    assert trace["usage_estimated"] is True, usage
    cost = Decimal(str(trace["cost_usd"]))
    assert cost > 0 and await _only_settlement(stack, tenant, after_seq, request_id) == cost


class SlowReader(threading.Thread):
    """A caller with a small receive buffer that reads `rate` bytes a second of one streamed answer."""

    def __init__(self, url: str, key: str, body: bytes, *, rate: int) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        self.rate = rate
        self.received = 0
        self.head = b""
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                sock.connect(self.address)
                sock.sendall(self.request)
                piece = max(1, self.rate // 20)
                while not self.stop.wait(0.05):
                    data = sock.recv(piece)
                    if not data:
                        return
                    if len(self.head) < 4096:
                        self.head += data[:4096]
                    self.received += len(data)
        except OSError as exc:
            self.error = exc

    @property
    def request_id(self) -> str:
        for line in self.head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-request-id":
                return value.strip().decode()
        raise AssertionError(f"no x-request-id in {self.head[:300]!r}")


def _slow_readers(stack: Stack, tenant: Tenant, marker: str, count: int) -> list[SlowReader]:
    """`count` callers each asking for a ~16 MB stream (200k echoed words, ~650 KB of prompt: under the test
    stack's 1 MiB body limit) and reading it at 32 KB/s."""
    body = json.dumps({"model": MODEL, "stream": True, "messages": _echo(marker, 200_000, "ab")}).encode()
    readers = [SlowReader(stack.proxy_url, tenant.secret, body, rate=32 * 1024) for _ in range(count)]
    for reader in readers:
        reader.start()
    return readers


async def _hang_up(readers: list[SlowReader]) -> None:
    for reader in readers:
        reader.stop.set()
    for reader in readers:
        await asyncio.to_thread(reader.join, 10)
    assert all(reader.error is None for reader in readers), [reader.error for reader in readers]


async def test_slow_readers_hold_the_upstream_back_and_proxy_memory_stays_bounded(
        stack: Stack, clean_emulator: None) -> None:
    """Four callers read ~16 MB streams at 32 KB/s. Once the socket buffers on the way are full, the emulator
    advances only as fast as the callers read and the proxy's memory stops growing: it does not buffer ahead
    of a slow caller, however far behind that caller falls."""
    tenant = new_tenant(stack, archive_payloads=False)
    marker = f"slow-{time.monotonic_ns()}"
    proxy = stack.children["proxy"]
    assert proxy.proc is not None
    pid = proxy.proc.pid
    before = rss_kib(pid)
    readers = _slow_readers(stack, tenant, marker, 4)

    def sample() -> tuple[int, int, int]:
        """(proxy RSS KiB, bytes the emulator sent, bytes the callers read), every stream still running."""
        entries = [e for e in _upstream_entries(stack, marker) if e.get("bytes_sent") is not None]
        assert len(entries) == 4 and all(e["outcome"] is None for e in entries), "every stream is still running"
        return rss_kib(pid), sum(e["bytes_sent"] for e in entries), sum(r.received for r in readers)

    try:
        await asyncio.sleep(WARM_UP_S)  # the socket buffers between emulator, proxy and callers fill up
        first = sample()
        await asyncio.sleep(PLATEAU_S)
        last = sample()
    finally:
        await _hang_up(readers)
    upstream_mib, read_mib = (last[1] - first[1]) / 2**20, (last[2] - first[2]) / 2**20
    rss_mib = (last[0] - first[0]) / 1024
    print(f"after {WARM_UP_S:.0f}s: proxy RSS {before // 1024} -> {first[0] // 1024} MiB; the emulator had sent "
          f"{first[1] / 2**20:.1f} MiB, the callers read {first[2] / 2**20:.2f} MiB; over the next {PLATEAU_S:.0f}s "
          f"the callers read {read_mib:.2f} MiB, the emulator sent {upstream_mib:.2f} MiB, "
          f"proxy RSS {rss_mib:+.1f} MiB")
    assert upstream_mib < read_mib + 2, "the proxy kept reading the upstream ahead of its slow callers"
    assert rss_mib < 8, "the proxy's memory kept growing while its callers fell behind"
    assert (first[0] - before) / 1024 < 64, "the proxy held far more than the socket buffers on the way"


async def test_a_slow_reader_hanging_up_is_traced_and_settled(stack: Stack, clean_emulator: None) -> None:
    tenant = new_tenant(stack, archive_payloads=False)
    after_seq = await ledger_seq(stack)
    readers = _slow_readers(stack, tenant, f"slow-hangup-{time.monotonic_ns()}", 1)
    await asyncio.sleep(WARM_UP_S)  # the proxy is now blocked writing to the full socket
    await _hang_up(readers)
    trace = _trace(stack, tenant, readers[0].request_id, timeout=10)
    assert (trace["status_code"], trace["error_code"]) == (499, "client_closed_request")
    assert await _only_settlement(stack, tenant, after_seq, readers[0].request_id) == Decimal(str(trace["cost_usd"]))


@pytest.fixture
def short_timeout_proxy(stack: Stack) -> Iterator[str]:
    """One more proxy process on the stack whose upstream read timeout is short."""
    child = stack.add_service("proxy-short-timeout", "proxy", env={"UPSTREAM_READ_TIMEOUT_S": str(STALL_TIMEOUT_S)})
    try:
        yield child.url
    finally:
        stack.remove_service("proxy-short-timeout")


async def test_upstream_stalling_mid_stream_times_out_and_is_traced(
        stack: Stack, clean_emulator: None, short_timeout_proxy: str) -> None:
    tenant = new_tenant(stack, archive_payloads=False)
    after_seq = await ledger_seq(stack)
    marker = f"stall-{time.monotonic_ns()}"
    _fault(stack, MODEL, {"stall_after_chunks": 4})
    body = {"model": MODEL, "stream": True, "messages": _echo(marker, 60)}
    started = time.monotonic()
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(f"{short_timeout_proxy}/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {tenant.secret}"}) as response:
            assert response.status == 200
            request_id = response.headers["x-request-id"]
            async for line in response.content:
                if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                    events.append(json.loads(line[6:]))
    took = time.monotonic() - started
    assert STALL_TIMEOUT_S <= took < STALL_TIMEOUT_S + 10, f"the stalled stream ended after {took:.1f}s"
    assert sum(1 for e in events if e.get("choices")) == 4, "the chunks before the stall reached the caller"
    assert events[-1]["error"]["code"] == "upstream_stream_interrupted", events[-1]

    trace = _trace(stack, tenant, request_id)
    assert (trace["status_code"], trace["error_type"], trace["error_code"]) == (502, "timeout",
                                                                                "upstream_stream_interrupted")
    assert [(a["status_code"], a["error_type"]) for a in trace["attempts"]] == [(502, "timeout")]
    assert trace["completion_tokens"] > 0 and trace["usage_estimated"] is True, "the partial answer is counted"
    assert await _only_settlement(stack, tenant, after_seq, request_id) == Decimal(str(trace["cost_usd"]))
    entry = await asyncio.to_thread(_ended_upstream, stack, marker)
    assert (entry["outcome"], entry["chunks_sent"]) == ("stalled", 4), "the proxy closed the stalled upstream"


async def test_upstream_never_answering_is_a_504_within_the_timeout(
        stack: Stack, clean_emulator: None, short_timeout_proxy: str) -> None:
    tenant = new_tenant(stack, archive_payloads=False)
    after_seq = await ledger_seq(stack)
    _fault(stack, "gpt-4.1-nano", {"hang": True})  # a model with a single route: no fallback to hide it
    started = time.monotonic()
    status, body = await asyncio.to_thread(
        http_json, "POST", f"{short_timeout_proxy}/v1/chat/completions", token=tenant.secret,
        body={"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": "anyone there?"}]})
    took = time.monotonic() - started
    assert (status, body["error"]["code"]) == (504, "upstream_timeout"), body
    assert STALL_TIMEOUT_S <= took < STALL_TIMEOUT_S + 10, f"the hung upstream was given up after {took:.1f}s"
    rows = wait_for(lambda: sql(stack, "SELECT request_id, status_code, error_code, cost_usd FROM traces FINAL "
                                       "WHERE organization_id = {o:String}", {"o": tenant.org}), 30)
    assert [(r["status_code"], r["error_code"], Decimal(str(r["cost_usd"]))) for r in rows] == [
        (504, "upstream_timeout", Decimal(0))]
    settled = await _only_settlement(stack, tenant, after_seq, rows[0]["request_id"])
    assert settled == Decimal(0), "the reservation is released, at cost 0"
