"""Payload capture: layers cut to the bus limit largest first, the archive built from the final response,
the publisher's memory bound (drops and counts, never blocks) while NATS is unreachable, and what it puts
on the bus: a box sealed to the archiver's key, opened by the archiver's inbound code."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from proto import codec
from proto.payload import PayloadArchive, fetch_reply_aad
from proto.trace import TraceEvent
from services.archiver import inbound
from services.common import sealing
from services.common.sealing import PrivateSealKey, SealKeyRing
from services.proxy.payloads import Capture, PayloadPublisher, fit, seal_archive

ARCHIVER_KEY = PrivateSealKey.generate("a1")


def test_fit_keeps_small_layers_whole_and_cuts_the_largest() -> None:
    layers = (b"a" * 10, b"b" * 1000, b"c" * 20, b"d" * 500)
    cut = fit(layers, 300)
    assert cut[0] == layers[0] and cut[2] == layers[2]
    assert sum(map(len, cut)) == 300 and len(cut[1]) == len(cut[3]) == 135
    assert fit(layers, 10_000) is layers


def _trace() -> TraceEvent:
    return TraceEvent(request_id="01JAAAAAAAAAAAAAAAAAAAAAAA", timestamp_ms=1, organization_id="org", api_key_id="k",
                      endpoint="/v1/chat/completions", requested_model="m", model="m", provider="p", upstream_model="m",
                      route_reason="default", status_code=200, stream=False, latency_ms=1.0, upstream_latency_ms=1.0,
                      redactions=2)


def test_archive_takes_the_plain_body_or_the_written_chunks() -> None:
    capture = Capture(caller_request=b'{"q": 1}', upstream_request=b"up", upstream_response=b"raw")
    archive = capture.archive(_trace(), web.Response(status=200, body=b'{"a": 1}'), max_bytes=1 << 20)
    assert (archive.caller_request, archive.upstream_request, archive.upstream_response, archive.caller_response) \
        == (b'{"q": 1}', b"up", b"raw", b'{"a": 1}')
    assert archive.redactions == 2 and not archive.truncated

    streamed = Capture(caller_request=b"q", upstream_chunks=[b"data: 1\n\n", b"data: 2\n\n"],
                       caller_chunks=[b"data: x\n\n", b"data: [DONE]\n\n"])
    archive = streamed.archive(_trace(), web.StreamResponse(status=200), max_bytes=1 << 20)
    assert archive.upstream_response == b"data: 1\n\ndata: 2\n\n"
    assert archive.caller_response == b"data: x\n\ndata: [DONE]\n\n"
    assert streamed.archive(_trace(), web.StreamResponse(status=200), max_bytes=20).truncated


class _DownJetStream:
    """A JetStream context whose publishes fail until `up` is set, recording what got through."""

    def __init__(self) -> None:
        self.up = False
        self.stored: list[PayloadArchive] = []
        self.raw: list[bytes] = []

    async def publish(self, subject: str, data: bytes, **_: Any) -> None:
        if not self.up:
            raise ConnectionError("nats down")
        self.stored.append(inbound.open_message(data, SealKeyRing([ARCHIVER_KEY])).archive)
        self.raw.append(data)


def _archive(request_id: str, size: int) -> PayloadArchive:
    return PayloadArchive(request_id=request_id, organization_id="org", timestamp_ms=1, caller_request=b"x" * size,
                          upstream_request=b"", upstream_response=b"", caller_response=b"")


async def test_publisher_buffers_up_to_its_bound_then_drops_and_counts() -> None:
    js = _DownJetStream()
    dropped = Counter("dropped", "test", registry=CollectorRegistry())
    publisher = PayloadPublisher(js, buffer_bytes=3000, dropped=dropped,  # type: ignore[arg-type]
                                 seal_to=ARCHIVER_KEY.public)
    publisher.start()
    for index in range(5):
        publisher.submit(_archive(f"r{index}", 900))  # ~1.2 kB encoded each: two fit
    assert dropped._value.get() == 3 and publisher.backlog == 2
    js.up = True
    for _ in range(100):
        if not publisher.backlog and publisher.buffered_bytes == 0:
            break
        await asyncio.sleep(0.05)
    await publisher.close(timeout=5)
    assert [archive.request_id for archive in js.stored] == ["r0", "r1"] and publisher.buffered_bytes == 0
    assert all(b"xxxx" not in data and b"eHh4" not in data for data in js.raw)  # neither raw nor base64


async def test_without_the_archiver_public_key_nothing_reaches_the_bus() -> None:
    js = _DownJetStream()
    js.up = True
    dropped = Counter("dropped", "test", registry=CollectorRegistry())
    publisher = PayloadPublisher(js, buffer_bytes=3000, dropped=dropped, seal_to=None)  # type: ignore[arg-type]
    publisher.start()
    publisher.submit(_archive("r0", 10))
    await publisher.close(timeout=5)
    assert dropped._value.get() == 1 and js.stored == []


def test_a_sealed_message_holds_only_ids_and_time_in_clear() -> None:
    archive = _archive("01JAAAAAAAAAAAAAAAAAAAAAAA", 0)
    archive = msgspec.structs.replace(archive, caller_request=b"CANARY-in-the-prompt", api_key_id="key_1",
                                      endpoint="/v1/chat/completions", status_code=200)
    data = seal_archive(archive, ARCHIVER_KEY.public)
    outer = codec.decode(data, PayloadArchive)
    assert outer.sealed and outer.caller_request == b"" and outer.api_key_id == "" and outer.endpoint == ""
    assert (outer.request_id, outer.organization_id, outer.timestamp_ms) == (archive.request_id, "org", 1)
    opened = inbound.open_message(data, SealKeyRing([ARCHIVER_KEY]))
    assert opened.archive == archive and not opened.legacy


def test_the_archiver_refuses_a_box_moved_to_another_request_or_key() -> None:
    archive = _archive("01JAAAAAAAAAAAAAAAAAAAAAAA", 5)
    outer = codec.decode(seal_archive(archive, ARCHIVER_KEY.public), PayloadArchive)
    moved = codec.encode(msgspec.structs.replace(outer, request_id="01JBBBBBBBBBBBBBBBBBBBBBBB"))
    with pytest.raises(sealing.SealAuthFailed):
        inbound.open_message(moved, SealKeyRing([ARCHIVER_KEY]))
    other_org = codec.encode(msgspec.structs.replace(outer, organization_id="org_b"))
    with pytest.raises(sealing.SealAuthFailed):
        inbound.open_message(other_org, SealKeyRing([ARCHIVER_KEY]))
    with pytest.raises(sealing.UnknownSealKey):
        inbound.open_message(codec.encode(outer), SealKeyRing([PrivateSealKey.generate("a2")]))


def test_a_plaintext_archive_from_an_older_proxy_is_still_accepted_and_marked() -> None:
    archive = _archive("01JAAAAAAAAAAAAAAAAAAAAAAA", 5)
    opened = inbound.open_message(codec.encode(archive), SealKeyRing([ARCHIVER_KEY]))
    assert opened.archive == archive and opened.legacy


def test_a_fetch_body_opens_only_with_the_one_time_key_for_its_request() -> None:
    reply_key = PrivateSealKey.generate(inbound.REPLY_KID)
    box = inbound.seal_fetch_body(b'{"layers": {}}', "01JAAAAAAAAAAAAAAAAAAAAAAA", reply_key.public.raw)
    assert sealing.open_sealed(box, fetch_reply_aad("01JAAAAAAAAAAAAAAAAAAAAAAA"),
                               SealKeyRing([reply_key])) == b'{"layers": {}}'
    with pytest.raises(sealing.SealAuthFailed):
        sealing.open_sealed(box, fetch_reply_aad("01JBBBBBBBBBBBBBBBBBBBBBBB"), SealKeyRing([reply_key]))
    with pytest.raises(sealing.InvalidSealKey):
        inbound.seal_fetch_body(b"x", "01JAAAAAAAAAAAAAAAAAAAAAAA", b"short")


async def test_a_large_archive_is_sealed_too() -> None:
    js = _DownJetStream()
    js.up = True
    dropped = Counter("dropped", "test", registry=CollectorRegistry())
    publisher = PayloadPublisher(js, buffer_bytes=1 << 24, dropped=dropped,  # type: ignore[arg-type]
                                 seal_to=ARCHIVER_KEY.public)
    publisher.start()
    publisher.submit(_archive("big", 1 << 20))
    await publisher.close(timeout=10)
    assert [archive.request_id for archive in js.stored] == ["big"] and len(js.stored[0].caller_request) == 1 << 20
    # 1 MiB of ciphertext in base64 holds any given 4 characters by chance (~8 %): look for 32-long runs
    assert b"x" * 32 not in js.raw[0] and b"eHh4" * 8 not in js.raw[0]
