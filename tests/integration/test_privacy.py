"""The data boundary with payload storage off: a canary sent in 100 prompts is found nowhere — NATS streams,
ClickHouse tables, S3 buckets, service logs or any other file Routeur wrote. Each search is first shown able
to find something (the request ids, which every place does hold)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anthropic
import openai

from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from tests.conftest import sql, wait_for
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
