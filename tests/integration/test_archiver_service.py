"""The archiver over real NATS: archives published to JetStream land sealed in radosgw under their dated key,
signed links open them, bad links are 403, redelivery and kill -9 lose nothing; SIGTERM finishes the batch."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from launcher import procs
from launcher.ceph import S3Endpoint
from launcher.nats import NatsServer
from launcher.stack import Stack
from proto import codec, subjects
from proto.payload import (
    PayloadArchive,
    PayloadFetchReply,
    PayloadFetchRequest,
    PayloadLinkReply,
    PayloadLinkRequest,
    fetch_reply_aad,
)
from services.archiver import envelope, links, objects
from services.archiver.envelope import MAGIC, parse_master_keys
from services.archiver.links import LinkKeys, derive_link_keys
from services.archiver.service import Archiver
from services.archiver.store import DAY_S, FileStore
from services.common import bus, sealing
from services.common.ids import new_ulid
from services.common.sealing import PrivateSealKey, PublicSealKey, SealKeyRing, parse_private_keys
from services.proxy.payloads import seal_archive
from tests.conftest import STACK_BUCKET
from tests.fixtures.ceph import s3_client

T = TypeVar("T")
INVALID = "payload link is invalid or has expired"


async def until(check: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll an async `check()` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def new_org() -> str:
    return f"org_t{uuid.uuid4().hex[:12]}"


def make_archive(org: str, canary: str = "", *, request_id: str | None = None, size: int = 0) -> PayloadArchive:
    rid = request_id or new_ulid()
    content = f"hi {canary} é \"q\"" + "x" * size
    return PayloadArchive(
        request_id=rid, organization_id=org, timestamp_ms=int(time.time() * 1000),
        caller_request=json.dumps({"messages": [{"role": "user", "content": content}]}).encode(),
        upstream_request=json.dumps({"model": "up", "content": f"[EMAIL_1] {canary}"}).encode(),
        upstream_response=f"data: {{\"delta\": \"{canary}\"}}\n\ndata: [DONE]\n\n".encode(),
        caller_response=json.dumps({"choices": [{"message": {"content": f"ok {canary}"}}]}).encode(),
        api_key_id="key_test", endpoint="/v1/chat/completions", stream=True, status_code=200, redactions=1)


async def publish(js: JetStreamContext, archive: PayloadArchive, msg_id: str | None = None, *,
                  seal_to: PublicSealKey | None = None) -> None:
    """As a proxy does (sealed to `seal_to`), or as a proxy older than sealing did (plaintext)."""
    data = codec.encode(archive) if seal_to is None else seal_archive(archive, seal_to)
    await js.publish(subjects.PAYLOAD_SUBJECT, data, headers={"Nats-Msg-Id": msg_id or archive.request_id})


async def request_link(nc: Client, org: str, request_id: str) -> PayloadLinkReply:
    reply = await nc.request(subjects.ARCHIVER_LINK, codec.encode(PayloadLinkRequest(request_id, org)), timeout=10)
    return codec.decode(reply.data, PayloadLinkReply)


async def request_fetch(nc: Client, request_id: str, query: dict[str, str]) -> PayloadFetchReply:
    """As the proxy asks: with a one-time reply key; a 200's body comes back opened (it crossed sealed)."""
    reply_key = PrivateSealKey.generate(sealing.ONE_TIME_KID)
    reply = await nc.request(subjects.ARCHIVER_FETCH, codec.encode(
        PayloadFetchRequest(request_id, query, reply_key=reply_key.public.raw)), timeout=10)
    fetched = codec.decode(reply.data, PayloadFetchReply)
    if fetched.status != 200:
        return fetched
    assert fetched.sealed and b"layers" not in fetched.body
    body = sealing.open_sealed(fetched.body, fetch_reply_aad(request_id), SealKeyRing([reply_key]))
    return msgspec.structs.replace(fetched, body=body)


def split(path: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(path)
    return parts.path.removeprefix(links.PATH_PREFIX), dict(parse_qsl(parts.query))


def bucket_keys(endpoint: S3Endpoint, prefix: str) -> list[str]:
    pages = s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=STACK_BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def scrape(stack: Stack) -> str:
    with urllib.request.urlopen(f"{stack.children['archiver'].url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
async def nc(stack: Stack) -> AsyncIterator[Client]:
    client = await nats.connect(stack.nats.url)
    yield client
    await client.close()


@pytest.fixture(scope="module")
def archiver_public(stack: Stack) -> PublicSealKey:
    return parse_private_keys(os.environ.get("ARCHIVER_SEAL_KEY") or stack.secrets["ARCHIVER_SEAL_KEY"],
                              variable="ARCHIVER_SEAL_KEY").active.public


@pytest.fixture(scope="module")
def link_keys(stack: Stack) -> LinkKeys:
    return derive_link_keys(parse_master_keys(os.environ.get("ROUTEUR_MASTER_KEY")
                                              or stack.secrets["ROUTEUR_MASTER_KEY"]))


# ------------------------------------------------------------------------------- against the stack


async def test_archive_is_sealed_under_its_dated_key_and_its_link_returns_every_layer(
        stack: Stack, nc: Client, s3_endpoint: S3Endpoint, archiver_public: PublicSealKey) -> None:
    org, canary = new_org(), f"canary-{uuid.uuid4().hex}"
    archive = make_archive(org, canary)
    await publish(nc.jetstream(), archive, seal_to=archiver_public)
    key = objects.object_key(org, archive.request_id)
    assert key.startswith(f"{org}/{time.strftime('%Y/%m/%d', time.gmtime())}/")  # published today, UTC

    s3 = s3_client(s3_endpoint)
    await until(lambda: asyncio.to_thread(bucket_keys, s3_endpoint, f"{org}/"))
    assert bucket_keys(s3_endpoint, f"{org}/") == [key]
    stored = s3.get_object(Bucket=STACK_BUCKET, Key=key)
    blob = stored["Body"].read()
    assert blob.startswith(MAGIC) and canary.encode() not in blob and b"EMAIL_1" not in blob
    assert stored["Metadata"]["kid"] == parse_master_keys(stack.secrets["ROUTEUR_MASTER_KEY"]).active.kid

    reply = await request_link(nc, org, archive.request_id)
    assert reply.error is None and reply.path is not None and reply.expires_at_ms is not None
    assert 0 < reply.expires_at_ms / 1000 - time.time() <= 900
    request_id, query = split(reply.path)
    assert request_id == archive.request_id and query["org"] == org

    fetched = await request_fetch(nc, request_id, query)
    assert fetched.status == 200, fetched
    body = json.loads(fetched.body)
    assert body["layers"] == {name: getattr(archive, name).decode() for name in objects.LAYERS}
    assert (body["request_id"], body["organization_id"], body["api_key_id"], body["timestamp_ms"], body["endpoint"],
            body["stream"], body["status_code"], body["redactions"], body["truncated"]) == (
        archive.request_id, org, "key_test", archive.timestamp_ms, "/v1/chat/completions", True, 200, 1, False)

    assert (await request_link(nc, new_org(), archive.request_id)).path is None  # not this org's archive
    assert (await request_link(nc, org, new_ulid())).path is None
    assert (await request_link(nc, "../etc", "passwd")).path is None


async def test_a_plaintext_archive_from_an_older_proxy_is_archived_and_counted(stack: Stack, nc: Client) -> None:
    before = metric(scrape(stack), "routeur_archiver_plaintext_accepted_total")
    org = new_org()
    archive = make_archive(org)
    await publish(nc.jetstream(), archive)
    fetched = await request_fetch(nc, *split(await until(lambda: _link_path(nc, org, archive.request_id))))
    assert fetched.status == 200 and json.loads(fetched.body)["layers"]["caller_request"]
    assert metric(scrape(stack), "routeur_archiver_plaintext_accepted_total") >= before + 1


async def test_a_box_that_does_not_open_is_dropped_and_a_fetch_without_a_reply_key_refused(
        stack: Stack, nc: Client, archiver_public: PublicSealKey, link_keys: LinkKeys) -> None:
    before = metric(scrape(stack), "routeur_archiver_undecodable_total")
    js = nc.jetstream()
    org = new_org()
    moved = codec.decode(seal_archive(make_archive(org), archiver_public), PayloadArchive)
    moved = msgspec.structs.replace(moved, organization_id=new_org())  # the box names another organization
    await js.publish(subjects.PAYLOAD_SUBJECT, codec.encode(moved), headers={"Nats-Msg-Id": uuid.uuid4().hex})
    tampered = codec.decode(seal_archive(make_archive(org), archiver_public), PayloadArchive)
    box = bytearray(tampered.sealed)
    box[-1] ^= 1  # one bit of the tag
    await js.publish(subjects.PAYLOAD_SUBJECT, codec.encode(msgspec.structs.replace(tampered, sealed=bytes(box))),
                     headers={"Nats-Msg-Id": uuid.uuid4().hex})
    archive = make_archive(org)
    await publish(js, archive, seal_to=archiver_public)
    path = await until(lambda: _link_path(nc, org, archive.request_id))
    await until(lambda: asyncio.to_thread(
        lambda: metric(scrape(stack), "routeur_archiver_undecodable_total") >= before + 2))
    assert len(await asyncio.to_thread(bucket_keys_of, stack, org)) == 1

    request_id, query = split(path)
    reply = await nc.request(subjects.ARCHIVER_FETCH, codec.encode(PayloadFetchRequest(request_id, query)), timeout=10)
    refused = codec.decode(reply.data, PayloadFetchReply)
    assert (refused.status, refused.code, refused.body) == (400, "invalid_request", b"")
    assert "reply_key" in (refused.error or "")


def bucket_keys_of(stack: Stack, org: str) -> list[str]:
    endpoint = S3Endpoint(url=stack.config.extra_env["S3_ENDPOINT_URL"],
                          access_key=stack.config.extra_env["S3_ACCESS_KEY"],
                          secret_key=stack.config.extra_env["S3_SECRET_KEY"],
                          region=stack.config.extra_env["S3_REGION"])
    return bucket_keys(endpoint, f"{org}/")


async def test_bad_links_are_403_and_a_missing_archive_404(stack: Stack, nc: Client, link_keys: LinkKeys) -> None:
    org, other = new_org(), new_org()
    mine, theirs = make_archive(org), make_archive(other)
    await publish(nc.jetstream(), mine)
    await publish(nc.jetstream(), theirs)
    my_path = await until(lambda: _link_path(nc, org, mine.request_id))
    their_path = await until(lambda: _link_path(nc, other, theirs.request_id))
    rid, query = split(my_path)
    their_rid, their_query = split(their_path)
    assert (await request_fetch(nc, rid, query)).status == 200

    _, expired = split(links.mint(org, rid, keys=link_keys, ttl_s=60, now_s=time.time() - 120).path)
    sig = query["sig"]
    forged = sig[:20] + ("A" if sig[20] != "A" else "B") + sig[21:]
    for bad_rid, bad_query in [
        (rid, expired),
        (rid, {**query, "sig": forged}),
        (rid, {**query, "expires": str(int(query["expires"]) + 60)}),
        (rid, their_query),  # another org's link, on this org's request
        (rid, {**their_query, "org": org}),
        (their_rid, {**query, "org": other}),
        (rid, {k: v for k, v in query.items() if k != "sig"}),
        (rid, {}),
    ]:
        reply = await request_fetch(nc, bad_rid, bad_query)
        assert (reply.status, reply.error, reply.code, reply.body) == (403, INVALID, "invalid_payload_link", b"")

    absent = new_ulid()
    _, signed = split(links.mint(org, absent, keys=link_keys, ttl_s=60, now_s=time.time()).path)
    reply = await request_fetch(nc, absent, signed)
    assert (reply.status, reply.code) == (404, "payload_not_found")

    text = scrape(stack)
    assert metric(text, 'routeur_archiver_fetches_total{outcome="invalid_expired"}') >= 1
    assert metric(text, 'routeur_archiver_fetches_total{outcome="invalid_bad_signature"}') >= 4
    assert metric(text, 'routeur_archiver_links_total{outcome="minted"}') >= 2


async def _link_path(nc: Client, org: str, request_id: str) -> str | None:
    return (await request_link(nc, org, request_id)).path


async def test_redelivery_of_a_request_id_leaves_one_object(stack: Stack, nc: Client,
                                                           s3_endpoint: S3Endpoint) -> None:
    org = new_org()
    archive = make_archive(org, "first")
    js = nc.jetstream()
    await publish(js, archive)
    await until(lambda: asyncio.to_thread(bucket_keys, s3_endpoint, f"{org}/"))
    before = metric(scrape(stack), "routeur_archiver_archived_total")
    await publish(js, archive)  # same Nats-Msg-Id: JetStream drops it
    await publish(js, archive, msg_id=f"{archive.request_id}-again")  # delivered again: the same object is rewritten
    await until(lambda: asyncio.to_thread(lambda: metric(scrape(stack), "routeur_archiver_archived_total") > before))
    assert bucket_keys(s3_endpoint, f"{org}/") == [objects.object_key(org, archive.request_id)]
    path = await _link_path(nc, org, archive.request_id)
    assert path is not None
    fetched = await request_fetch(nc, *split(path))
    assert json.loads(fetched.body)["layers"]["upstream_response"] == archive.upstream_response.decode()


async def test_large_and_binary_layers_come_back_verbatim(nc: Client) -> None:
    org = new_org()
    archive = make_archive(org, size=3 << 20)
    archive = msgspec.structs.replace(archive, upstream_response=bytes(range(256)) * 8, truncated=True)
    await publish(nc.jetstream(), archive)
    path = await until(lambda: _link_path(nc, org, archive.request_id))
    fetched = await request_fetch(nc, *split(path))
    assert fetched.status == 200
    layers = json.loads(fetched.body)["layers"]
    assert layers["caller_request"] == archive.caller_request.decode()
    assert base64.b64decode(layers["upstream_response"]["base64"]) == archive.upstream_response


async def test_undecodable_messages_are_dropped_and_the_consumer_goes_on(stack: Stack, nc: Client) -> None:
    before = metric(scrape(stack), "routeur_archiver_undecodable_total")
    js = nc.jetstream()
    await js.publish(subjects.PAYLOAD_SUBJECT, b"\x00not an archive", headers={"Nats-Msg-Id": uuid.uuid4().hex})
    bad_org = make_archive("org/../escape")
    await publish(js, bad_org)
    org = new_org()
    archive = make_archive(org)
    await publish(js, archive)
    assert await until(lambda: _link_path(nc, org, archive.request_id))
    await until(lambda: asyncio.to_thread(
        lambda: metric(scrape(stack), "routeur_archiver_undecodable_total") >= before + 2))


async def test_kill_9_mid_load_loses_no_archive(stack: Stack, nc: Client, s3_endpoint: S3Endpoint) -> None:
    org = new_org()
    js = nc.jetstream()
    first = [make_archive(org, f"c{i}") for i in range(200)]
    later = [make_archive(org, f"d{i}") for i in range(100)]
    await asyncio.gather(*(publish(js, archive) for archive in first))
    await until(lambda: asyncio.to_thread(bucket_keys, s3_endpoint, f"{org}/"), interval=0.02)
    await asyncio.to_thread(stack.kill_service, "archiver")
    try:
        written = len(bucket_keys(s3_endpoint, f"{org}/"))
        await asyncio.gather(*(publish(js, archive) for archive in later))  # while no archiver runs
    finally:
        await asyncio.to_thread(stack.start_service, "archiver")
    expected = sorted(objects.object_key(org, archive.request_id) for archive in first + later)

    async def all_written() -> bool:
        return await asyncio.to_thread(bucket_keys, s3_endpoint, f"{org}/") == expected

    await until(all_written, timeout=45)
    assert written < len(expected)
    sample = later[-1]
    fetched = await request_fetch(nc, *split(await until(lambda: _link_path(nc, org, sample.request_id))))
    assert json.loads(fetched.body)["layers"]["caller_response"] == sample.caller_response.decode()


# ---------------------------------------------------------------------- in process, on a local NATS


class Local:
    def __init__(self, nc: Client, store: FileStore, root: Path) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.store = store
        self.root = root
        self.keys = parse_master_keys(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
        self.seal_keys = SealKeyRing([PrivateSealKey.generate("s1")])

    def archiver(self, *, retention_days: int = 30, batch: int = 16) -> Archiver:
        return Archiver(nc=self.nc, js=self.js, store=self.store, keys=self.keys, seal_keys=self.seal_keys,
                        link_keys=derive_link_keys(self.keys), url_ttl_s=900, retention_days=retention_days,
                        sweep_interval_s=3600, batch=batch)


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Local]:
    server = NatsServer(tmp_path / "nats", port=procs.free_port(), log_path=tmp_path / "nats.log")
    server.start()
    client = await nats.connect(server.url)
    await bus.ensure_streams(client.jetstream(), (subjects.PAYLOAD_STREAM,))
    store = FileStore(tmp_path / "objects")
    await store.ensure_bucket()
    yield Local(client, store, tmp_path / "objects")
    await client.close()
    server.stop()


async def test_stop_finishes_the_batch_in_hand(local: Local) -> None:
    """Everything delivered before stop() is written and acked; the rest waits in the stream, none half-done."""
    org = new_org()
    total = 400
    for start in range(0, total, 100):
        await asyncio.gather(*(publish(local.js, make_archive(org, f"s{i}")) for i in range(start, start + 100)))
    archiver = local.archiver(batch=32)
    await archiver.start()
    await until(lambda: local.store.list(f"{org}/"), interval=0.005)
    await archiver.stop()
    await local.nc.flush()
    info = await local.js.consumer_info(subjects.PAYLOAD_STREAM, subjects.PAYLOAD_CONSUMER)
    written = len(await local.store.list(f"{org}/"))
    assert info.num_ack_pending == 0 and written == archiver.archived
    assert written + info.num_pending == total and info.num_pending > 0

    again = local.archiver()
    await again.start()
    try:
        await until(lambda: _count_is(local.store, f"{org}/", total), timeout=30)
    finally:
        await again.stop()


async def _count_is(store: FileStore, prefix: str, count: int) -> bool:
    return len(await store.list(prefix)) == count


async def test_sweep_deletes_only_archives_past_retention(local: Local) -> None:
    org = new_org()
    old, fresh = make_archive(org), make_archive(org)
    for archive in (old, fresh):
        await local.store.put(objects.object_key(org, archive.request_id), b"sealed")
    past = time.time() - 3 * DAY_S
    os.utime(local.root / objects.object_key(org, old.request_id), (past, past))
    assert await local.archiver(retention_days=2).sweep() == 1
    assert await local.store.list(f"{org}/") == [objects.object_key(org, fresh.request_id)]
    assert await local.archiver(retention_days=0).sweep() == 0


async def test_a_failed_write_is_never_acked_and_is_retried(local: Local, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_bytes(b"a file where the store's directory should be")
    local.store = FileStore(blocked)
    archiver = local.archiver()
    await archiver.start()
    try:
        org = new_org()
        archive = make_archive(org)
        await publish(local.js, archive)
        await until(lambda: _sample(archiver, "routeur_archiver_write_failures_total", reason="invalid_key"))
        info = await local.js.consumer_info(subjects.PAYLOAD_STREAM, subjects.PAYLOAD_CONSUMER)
        assert archiver.archived == 0 and info.num_pending == 0
        assert info.ack_floor is not None and info.ack_floor.stream_seq == 0  # delivered, not acked
        blocked.unlink()  # the store is back: the nak'ed message is redelivered and written
        await until(lambda: local.store.list(f"{org}/"), timeout=10)
        assert await local.store.list(f"{org}/") == [objects.object_key(org, archive.request_id)]
        assert await _sample(archiver, "routeur_archiver_redeliveries_total") >= 1
    finally:
        await archiver.stop()


async def _sample(archiver: Archiver, name: str, **labels: str) -> float:
    return archiver.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_reply_too_large_for_the_bus_is_an_error_not_silence(local: Local) -> None:
    org = new_org()
    archive = msgspec.structs.replace(make_archive(org), upstream_response=b"y" * (13 << 20))
    sealed = envelope.seal(objects.encode_archive(archive), archive.request_id, local.keys)
    await local.store.put(objects.object_key(org, archive.request_id), sealed)
    archiver = local.archiver()
    await archiver.start()
    try:
        path = (await request_link(local.nc, org, archive.request_id)).path
        assert path is not None
        reply = await request_fetch(local.nc, *split(path))
        assert (reply.status, reply.code) == (500, "payload_too_large")
    finally:
        await archiver.stop()
