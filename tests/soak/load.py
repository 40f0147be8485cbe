"""A steady open-loop load through the proxies that records every response, and the after-the-fact check that
every 2xx has exactly one trace row, one settled debit and one archive object."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from proto import subjects
from proto.billing import decode_event, settlements_in
from tests.conftest import STACK_BUCKET, http_json, sql
from tests.fixtures.ceph import s3_client

SOAK = os.environ.get("ROUTEUR_SOAK", "") not in ("", "0")
MODEL = "gpt-4o-mini"


def admin(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    """Billing's admin API (Bearer admin token); fails the test on an error status."""
    status, data = http_json(method, f"{stack.children['billing'].url}/v1/admin{path}",
                             token=stack.secrets["ROUTEUR_ADMIN_TOKEN"], body=body)
    assert status < 300, (status, data)
    return data


@dataclass(frozen=True)
class Tenant:
    org: str
    key_id: str
    secret: str


def new_tenant(stack: Stack, *, archive_payloads: bool = True, topup: str = "1000") -> Tenant:
    """A fresh organization with a wallet and one key (archiving on by default), so the books start empty."""
    org = f"org_load_{uuid.uuid4().hex[:10]}"
    admin(stack, "POST", "/organizations", {"id": org})
    admin(stack, "POST", f"/organizations/{org}/topups", {"amount_usd": topup})
    key = admin(stack, "POST", f"/organizations/{org}/keys", {"name": "load", "archive_payloads": archive_payloads})
    return Tenant(org, key["id"], key["secret"])


@dataclass
class Outcome:
    """One request as the caller saw it. `status` 0: no HTTP response at all (refused, reset, client timeout)."""

    index: int
    proxy: str
    stream: bool
    started: float  # monotonic, when it was sent
    elapsed_s: float = 0.0
    status: int = 0
    request_id: str | None = None
    error: str | None = None  # the error body's code, the stream's error event code, or the exception's name
    completed: bool = False  # non-streaming: the body arrived; streaming: `data: [DONE]` and no error event


class Load:
    """`rps` requests a second on a fixed schedule (open loop: a slow answer never delays the next send),
    alternating proxies, every `stream_every`-th one streamed. At most `max_in_flight` run at once; a tick
    that finds no room is counted in `shed` rather than queued, so a stall cannot build a backlog."""

    def __init__(self, proxies: dict[str, str], api_key: str, *, rps: float, stream_every: int = 2,
                 model: str = MODEL, timeout_s: float = 30.0, max_in_flight: int = 400) -> None:
        self.proxies = list(proxies.items())
        self.api_key = api_key
        self.rps = rps
        self.stream_every = stream_every
        self.model = model
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_in_flight = max_in_flight
        self.outcomes: list[Outcome] = []
        self.shed = 0
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=self.timeout)
        self._runner = asyncio.create_task(self._schedule())

    async def stop(self) -> list[Outcome]:
        """Stop sending, wait for every request in flight to finish, close the session."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
        if self._tasks:
            await asyncio.gather(*self._tasks)
        if self._session is not None:
            await self._session.close()
        return self.outcomes

    async def _schedule(self) -> None:
        period = 1.0 / self.rps
        start = time.monotonic()
        index = 0
        while not self._stop.is_set():
            due = start + index * period
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return
                except TimeoutError:
                    pass
            if len(self._tasks) >= self.max_in_flight:
                self.shed += 1
            else:
                task = asyncio.create_task(self._one(index))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            index += 1

    async def _one(self, index: int) -> None:
        name, url = self.proxies[index % len(self.proxies)]
        stream = self.stream_every > 0 and index % self.stream_every == self.stream_every - 1
        outcome = Outcome(index=index, proxy=name, stream=stream, started=time.monotonic())
        self.outcomes.append(outcome)
        body: dict[str, Any] = {"model": self.model, "stream": stream,
                                "messages": [{"role": "user", "content": f"load request {index}"}]}
        assert self._session is not None
        try:
            async with self._session.post(f"{url}/v1/chat/completions", json=body,
                                          headers={"Authorization": f"Bearer {self.api_key}"}) as response:
                outcome.status = response.status
                outcome.request_id = response.headers.get("x-request-id")
                if response.status >= 400:
                    outcome.error = _error_code(await response.read())
                elif stream:
                    await _read_stream(response, outcome)
                else:
                    json.loads(await response.read())
                    outcome.completed = True
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            outcome.error = outcome.error or type(exc).__name__
        outcome.elapsed_s = time.monotonic() - outcome.started


def _error_code(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unreadable_error_body"


async def _read_stream(response: aiohttp.ClientResponse, outcome: Outcome) -> None:
    done = False
    async for line in response.content:
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            outcome.error = str(event["error"].get("code"))
    outcome.completed = done and outcome.error is None


# ------------------------------------------------------------------------------------------ the books


async def ledger_seq(stack: Stack) -> int:
    """The ledger stream's last sequence now: events after it belong to what follows."""
    nc = await nats.connect(stack.nats.url)
    try:
        info = await nc.jetstream().stream_info(subjects.LEDGER_STREAM)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def settlements(stack: Stack, org: str, after_seq: int) -> dict[str, list[Decimal]]:
    """Every settlement of `org` stored in ROUTEUR_LEDGER after `after_seq` (lone or in a SettledBatch):
    request id -> costs (one each)."""
    nc = await nats.connect(stack.nats.url)
    found: dict[str, list[Decimal]] = {}
    try:
        js = nc.jetstream()
        last = int((await js.stream_info(subjects.LEDGER_STREAM)).state.last_seq)
        if last <= after_seq:
            return found
        sub = await js.subscribe(subjects.LEDGER_SUBJECT, stream=subjects.LEDGER_STREAM, ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                                       opt_start_seq=after_seq + 1),
                                 pending_msgs_limit=-1, pending_bytes_limit=-1)
        seq = after_seq
        while seq < last:
            msg = await sub.next_msg(timeout=10)
            seq = msg.metadata.sequence.stream
            for event in settlements_in(decode_event(msg.data)):
                if event.organization_id == org:
                    found.setdefault(event.request_id, []).append(event.cost_usd)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


def archived_ids(s3_endpoint: S3Endpoint, org: str) -> Counter[str]:
    """Request ids with an archive object under `<org>/…/<request_id>`, with how many objects each has."""
    pages = s3_client(s3_endpoint).get_paginator("list_objects_v2").paginate(Bucket=STACK_BUCKET, Prefix=f"{org}/")
    return Counter(item["Key"].rsplit("/", 1)[-1] for page in pages for item in page.get("Contents", []))


@dataclass
class Books:
    """What the system recorded for one tenant."""

    traced: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> traces FINAL row
    traced_twice: set[str] = field(default_factory=set)  # request ids with several rows in traces FINAL
    raw_rows: int = 0  # rows in `traces` before FINAL collapses redeliveries
    rollup_requests: int = 0  # sum(requests) in usage_minute
    settled: dict[str, list[Decimal]] = field(default_factory=dict)
    archived: Counter[str] = field(default_factory=Counter)
    archive_read: bool = False  # the object store was listed (else `archived` is empty by design)
    spent_usd: Decimal = Decimal(0)
    key_requests: int = 0


async def read_books(stack: Stack, tenant: Tenant, s3_endpoint: S3Endpoint | None, after_seq: int) -> Books:
    rows = sql(stack, "SELECT request_id, status_code, cost_usd FROM traces FINAL WHERE organization_id = {org:String}",
               {"org": tenant.org})
    raw = sql(stack, "SELECT count() AS n FROM traces WHERE organization_id = {org:String}", {"org": tenant.org})
    rollup = sql(stack, "SELECT sum(requests) AS n FROM usage_minute WHERE organization_id = {org:String}",
                 {"org": tenant.org})
    org = admin(stack, "GET", f"/organizations/{tenant.org}")
    key = admin(stack, "GET", f"/keys/{tenant.key_id}")
    copies = Counter(row["request_id"] for row in rows)
    return Books(traced={row["request_id"]: row for row in rows}, raw_rows=int(raw[0]["n"]),
                 traced_twice={rid for rid, n in copies.items() if n > 1},
                 rollup_requests=int(rollup[0]["n"] or 0),
                 settled=await settlements(stack, tenant.org, after_seq),
                 archived=archived_ids(s3_endpoint, tenant.org) if s3_endpoint is not None else Counter(),
                 archive_read=s3_endpoint is not None,
                 spent_usd=Decimal(str(org["spent_usd"])), key_requests=int(key["requests"]))


@dataclass
class Report:
    """One run's figures, as RELIABILITY.md quotes them. `traced`, `settled` and `archived` count the 2xx with a
    trace row, a settled debit and an archive object; `lost` the 2xx missing any of them; `doubled` the requests
    with several rows in traces FINAL, several settlements or several archive objects."""

    fault: str
    mode: str  # "fast" (make test) or "soak" (ROUTEUR_SOAK=1)
    sent: int
    ok: int
    refused_503: int
    other: dict[str, int]  # status -> count, neither 2xx nor 503 (0: no HTTP answer at all)
    shed: int
    traced: int
    settled: int
    archived: int
    lost: int
    doubled: int
    proxy_restarts: int  # proxy processes restarted (or replaced) during the load
    raw_duplicate_rows: int  # rows in `traces` beyond one per request id when checked (merges collapse them)
    rollup_extra: int  # usage_minute's request count minus traces FINAL's: a redelivery counted twice
    median_503_s: float
    max_503_s: float
    max_elapsed_s: float
    catch_up_s: float
    outage_s: float
    load_s: float
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # broken invariants still there when the wait ended

    def save(self) -> None:
        """Print the report and append it to $ROUTEUR_RELIABILITY_REPORT (JSON lines) when that is set."""
        line = json.dumps(asdict(self), sort_keys=True)
        print(f"RELIABILITY {line}")
        target = os.environ.get("ROUTEUR_RELIABILITY_REPORT")
        if target:
            with Path(target).open("a") as handle:
                handle.write(line + "\n")


def problems(outcomes: list[Outcome], books: Books, *, archive: bool) -> list[str]:
    """Every broken invariant, in words; empty when the books are exact."""
    found: list[str] = []
    ok = [o for o in outcomes if 200 <= o.status < 300]
    ok_ids = {o.request_id for o in ok}
    if None in ok_ids:
        found.append("a 2xx without x-request-id")
    for o in ok:
        if not o.completed:
            found.append(f"2xx {o.request_id} ended early ({o.error})")
    missing_trace = [rid for rid in ok_ids if rid not in books.traced]
    if missing_trace:
        found.append(f"{len(missing_trace)} 2xx without a trace row, e.g. {missing_trace[:3]}")
    not_200 = [rid for rid in ok_ids if rid in books.traced and books.traced[rid]["status_code"] != 200]
    if not_200:
        found.append(f"{len(not_200)} 2xx traced with another status, e.g. {not_200[:3]}")
    unsettled = [rid for rid in ok_ids if rid not in books.settled]
    if unsettled:
        found.append(f"{len(unsettled)} 2xx without a settled debit, e.g. {unsettled[:3]}")
    doubled = [rid for rid, costs in books.settled.items() if len(costs) != 1]
    if doubled:
        found.append(f"{len(doubled)} requests settled more than once, e.g. {doubled[:3]}")
    if books.traced_twice:
        found.append(f"{len(books.traced_twice)} requests with several rows in traces FINAL, "
                     f"e.g. {sorted(books.traced_twice)[:3]}")
    untraced_debits = [rid for rid in books.settled if rid not in books.traced]
    if untraced_debits:
        found.append(f"{len(untraced_debits)} debits without a trace, e.g. {untraced_debits[:3]}")
    for rid, costs in books.settled.items():
        row = books.traced.get(rid)
        if row is not None and Decimal(str(row["cost_usd"])) != costs[0]:
            found.append(f"{rid} settled at {costs[0]} but traced at {row['cost_usd']}")
            break
    debits = sum((costs[0] for costs in books.settled.values()), Decimal(0))
    if books.spent_usd != debits:
        found.append(f"billing says {books.spent_usd} spent, the ledger's debits sum to {debits}")
    if books.rollup_requests != len(books.traced):  # the tracer's reconciler repairs a fault's skew within seconds
        found.append(f"usage_minute counts {books.rollup_requests} requests, traces FINAL {len(books.traced)}")
    if books.key_requests != len(books.settled):
        found.append(f"the key counts {books.key_requests} requests, the ledger {len(books.settled)} settlements")
    if archive:
        unarchived = [rid for rid in ok_ids if books.archived[rid or ""] == 0]
        if unarchived:
            found.append(f"{len(unarchived)} 2xx without an archive object, e.g. {unarchived[:3]}")
        extra = [rid for rid, n in books.archived.items() if n != 1]
        if extra:
            found.append(f"{len(extra)} requests with several archive objects")
    return found


async def settle_books(stack: Stack, tenant: Tenant, outcomes: list[Outcome], *, s3_endpoint: S3Endpoint | None,
                       after_seq: int, timeout_s: float) -> tuple[Books, float, list[str]]:
    """Poll until the books are exact (nothing lost, nothing doubled) or `timeout_s` passes; returns the books,
    the monotonic time at which they were last read, and what is still wrong (empty: exact)."""
    started = time.monotonic()
    archive = s3_endpoint is not None
    shown: list[str] = []
    while True:
        books = await read_books(stack, tenant, s3_endpoint, after_seq)
        found = problems(outcomes, books, archive=archive)
        if not found or time.monotonic() - started > timeout_s:
            return books, time.monotonic(), found
        if [line.split(",")[0] for line in found] != shown:
            shown = [line.split(",")[0] for line in found]
            print(f"catching up after {time.monotonic() - started:.1f}s: {shown}")
        await asyncio.sleep(1.0)


def report(fault: str, mode: str, outcomes: list[Outcome], books: Books, *, shed: int, proxy_restarts: int,
           catch_up_s: float, outage_s: float, load_s: float, notes: list[str] | None = None,
           found: list[str] | None = None) -> Report:
    statuses = Counter(o.status for o in outcomes)
    ok_ids = {o.request_id for o in outcomes if 200 <= o.status < 300}
    archived = {rid for rid in ok_ids if books.archived[rid or ""] >= 1}
    other = {str(status): n for status, n in statuses.items() if not (200 <= status < 300 or status == 503)}
    refusals = [o.elapsed_s for o in outcomes if o.status == 503]
    return Report(
        fault=fault, mode=mode, sent=len(outcomes), ok=len(ok_ids), refused_503=statuses.get(503, 0), other=other,
        shed=shed, traced=sum(1 for rid in ok_ids if rid in books.traced),
        settled=sum(1 for rid in ok_ids if rid in books.settled),
        archived=len(archived),
        lost=sum(1 for rid in ok_ids if rid not in books.traced or rid not in books.settled
                 or (books.archive_read and rid not in archived)),
        doubled=len(books.traced_twice | {rid for rid, costs in books.settled.items() if len(costs) > 1}
                    | {rid for rid, n in books.archived.items() if n > 1}),
        proxy_restarts=proxy_restarts,
        raw_duplicate_rows=books.raw_rows - len(books.traced),
        rollup_extra=books.rollup_requests - len(books.traced),
        median_503_s=round(statistics.median(refusals), 3) if refusals else 0.0,
        max_503_s=round(max(refusals, default=0.0), 3),
        max_elapsed_s=round(max((o.elapsed_s for o in outcomes), default=0.0), 3),
        catch_up_s=round(catch_up_s, 1), outage_s=round(outage_s, 1), load_s=round(load_s, 1), notes=notes or [],
        problems=found or [])


def proxy_pids(stack: Stack) -> dict[str, tuple[int, int]]:
    """(pid, supervisor restarts) of every proxy process: unchanged means it never crashed."""
    return {name: (child.proc.pid if child.proc else -1, child.restarts)
            for name, child in stack.children.items() if child.service == "proxy"}


def proxy_restarts(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Restarts between two `proxy_pids` snapshots: the supervisor's count, and at least one per changed pid."""
    return sum(max(after[name][1] - before[name][1], int(after[name][0] != before[name][0])) for name in before)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
