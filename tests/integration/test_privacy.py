"""The data boundary with payload storage off: a canary sent in 100 prompts is found nowhere — NATS streams,
ClickHouse tables, S3 buckets, service logs or any other file Routeur wrote. Each search is first shown able
to find something (the request ids, which every place does hold). With payload storage on and the archiver
down, the archives wait in JetStream sealed: the canary is in no NATS file, raw or base64."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import urllib.request
import uuid
from pathlib import Path

import anthropic
import nats
import openai

from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from proto import codec, subjects
from proto.payload import PayloadArchive
from tests.conftest import STACK_BUCKET, http_json, sql, wait_for
from tests.fixtures.ceph import s3_client
from tests.integration.test_dlp_gateway import org_key


def _send_canaries(stack: Stack, key: str, canary: str) -> list[str]:
    """100 requests carrying the canary: plain, streamed, Anthropic-format, embeddings and refused ones."""
    oai = openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0)
    claude = anthropic.Anthropic(base_url=stack.proxy_url, api_key=key, max_retries=0)
    ids: list[str] = []
    for index in range(100):
        prompt = f"Remember {canary} number {index}."
        kind = index % 5
        if kind in (0, 1):
            raw = oai.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}])
        elif kind == 2:
            raw = oai.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True,
                stream_options={"include_usage": True})
            raw.http_response.read()
        elif kind == 3:
            raw = claude.messages.with_raw_response.create(
                model="claude-haiku-4.5", max_tokens=64, messages=[{"role": "user", "content": prompt}])
        elif index % 10 == 4:
            raw = oai.embeddings.with_raw_response.create(model="text-embedding-3-small", input=prompt)
        else:  # refused by validation after auth: the error must not echo the prompt
            try:
                oai.chat.completions.create(model="gpt-4o-mini", temperature=7,
                                            messages=[{"role": "user", "content": prompt}])
            except openai.BadRequestError as error:
                assert canary not in error.response.text
                ids.append(error.response.headers["x-request-id"])
                continue
            raise AssertionError("temperature 7 must be refused")
        ids.append(raw.headers["x-request-id"])
    return ids


def _files_containing(root: Path, needle: bytes, *, skip: set[Path]) -> list[Path]:
    found = []
    # os.walk, not rglob: the engines delete temporary files and directories while we look
    paths = (Path(folder) / name for folder, _, names in os.walk(root) for name in names)
    for path in paths:
        if path.is_file() and path not in skip and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def _clickhouse_hits(stack: Stack, needle: str) -> list[str]:
    """Every String-typed column of every Routeur table searched for `needle`."""
    columns = sql(stack, "SELECT table, name FROM system.columns WHERE database = currentDatabase() "
                         "AND type LIKE '%String%' AND table NOT LIKE '.inner%'")
    hits = []
    for column in columns:
        rows = sql(stack, f"SELECT count() AS n FROM `{column['table']}` "
                          f"WHERE position(toString(`{column['name']}`), {{needle:String}}) > 0",
                   {"needle": needle})
        if int(rows[0]["n"]):
            hits.append(f"{column['table']}.{column['name']}")
    return hits


def _s3_keys(endpoint: S3Endpoint) -> set[tuple[str, str]]:
    """Every (bucket, key) in the object store: listing only, cheap even after a soak's tens of thousands."""
    s3 = s3_client(endpoint)
    return {(bucket["Name"], item["Key"]) for bucket in s3.list_buckets()["Buckets"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
            for item in page.get("Contents", [])}


def _s3_hits(endpoint: S3Endpoint, needle: bytes, *, before: set[tuple[str, str]]) -> list[str]:
    """Objects written since `before` was listed whose key or body holds `needle` (older objects cannot hold a
    canary made after them; reading only the new ones keeps this bounded after a soak)."""
    s3 = s3_client(endpoint)
    hits = []
    for bucket, key in sorted(_s3_keys(endpoint) - before):
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if needle in body or needle in key.encode():
            hits.append(f"{bucket}/{key}")
    return hits


def test_a_canary_in_100_prompts_is_found_nowhere(stack: Stack, s3_endpoint: S3Endpoint) -> None:
    _, key = org_key(stack)  # payload storage off, DLP off: the defaults
    canary = f"CANARY{uuid.uuid4().hex}"
    objects_before = _s3_keys(s3_endpoint)
    ids = _send_canaries(stack, key, canary)
    assert len(ids) == 100
    placeholders = ", ".join(f"'{request_id}'" for request_id in ids)
    wait_for(lambda: sql(stack, f"SELECT count() AS n FROM traces FINAL WHERE request_id IN ({placeholders})")[0]["n"]
             == 100, timeout=30)

    data_dir = stack.data_dir
    provider_logs = {path for path in stack.logs.glob("emulator*")}  # the provider's own log, not Routeur's
    control = ids[-1].encode()

    nats_dir = stack.nats.data_dir
    assert _files_containing(nats_dir, control, skip=set()), "the NATS search finds the trace events"
    assert _files_containing(nats_dir, canary.encode(), skip=set()) == []

    assert "traces.request_id" in _clickhouse_hits(stack, ids[-1]), "the ClickHouse search finds the traces"
    assert _clickhouse_hits(stack, canary) == []

    assert _files_containing(stack.logs, control, skip=provider_logs), "the log search finds the request ids"
    assert _files_containing(data_dir, canary.encode(), skip=provider_logs) == []

    assert _s3_hits(s3_endpoint, canary.encode(), before=objects_before) == []


def _needles(text: str) -> list[bytes]:
    """`text` as it would sit in a bus message: raw, and inside base64 (a PayloadArchive's layers are bytes,
    which msgspec JSON writes as base64) at each of the three byte alignments."""
    data = text.encode()
    needles = [data]
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data)
        needles.append(encoded[(offset * 4 + 2) // 3 : -4])
    return needles


def _stream_messages(stack: Stack) -> int:
    async def count() -> int:
        nc = await nats.connect(stack.nats.url)
        try:
            info = await nc.jetstream().stream_info(subjects.PAYLOAD_STREAM)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def test_archives_wait_sealed_while_the_archiver_is_down_then_complete(
        stack: Stack, s3_endpoint: S3Endpoint) -> None:
    """Payload archiving on and the archiver stopped for the whole run: the archives wait in JetStream, and the
    canary (raw or base64) is in no NATS file; the archiver back, every archive is stored and opens."""
    org, key = org_key(stack, archive_payloads=True)
    canary = f"CANARY{uuid.uuid4().hex}"
    needles = _needles(canary)
    plaintext = codec.encode(PayloadArchive(request_id="r", organization_id=org, timestamp_ms=0,
                                            caller_request=f"Remember {canary} number 1.".encode(),
                                            upstream_request=b"", upstream_response=b"", caller_response=b""))
    assert any(needle in plaintext for needle in needles[1:]), "the base64 needles find a plaintext archive"

    stack.stop_service("archiver")
    try:
        before = _stream_messages(stack)
        ids = _send_canaries(stack, key, canary)

        def settled() -> int | None:
            first = _stream_messages(stack)
            time.sleep(0.5)
            return first - before if first == _stream_messages(stack) and first - before >= 80 else None

        archived = wait_for(settled, timeout=30)
        nats_dir = stack.nats.data_dir
        wait_for(lambda: _files_containing(nats_dir, ids[0].encode(), skip=set()), timeout=10)  # the search works
        for needle in needles:
            assert _files_containing(nats_dir, needle, skip=set()) == [], needle
        assert all(needle not in path.read_bytes() for path in stack.logs.glob("*.log")
                   if not path.name.startswith("emulator") for needle in needles)
    finally:
        stack.start_service("archiver")

    prefix = f"{org}/"
    s3 = s3_client(s3_endpoint)

    def stored() -> int | None:
        count = sum(len(page.get("Contents", [])) for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=STACK_BUCKET, Prefix=prefix))
        return count if count == archived else None

    wait_for(stored, timeout=60, interval=0.5)
    status, trace = http_json("GET", f"{stack.proxy_url}/v1/traces/{ids[0]}", token=key)
    assert status == 200 and trace["payload_url"], trace
    with urllib.request.urlopen(trace["payload_url"], timeout=30) as response:  # noqa: S310 (loopback)
        body = json.loads(response.read())
    assert canary in body["layers"]["caller_request"]
