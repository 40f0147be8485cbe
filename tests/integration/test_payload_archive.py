"""Payload archiving through the whole gateway: four layers encrypted in the real S3 server (radosgw),
opened by a signed `payload_url` that plain curl can use; expired or tampered links are 403."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from launcher.ceph import S3Endpoint
from launcher.stack import Stack
from services.archiver import envelope, links
from tests.conftest import STACK_BUCKET, http_json, wait_for
from tests.fixtures.ceph import s3_client
from tests.integration.test_dlp_gateway import ECHO, EMAIL, client, org_key, trace


def fetch(url: str) -> tuple[int, Any]:
    """GET with no headers at all, like `curl <url>`."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def archived_url(stack: Stack, key: str, request_id: str) -> str:
    """The trace's payload_url, once the archiver has stored the object."""
    def check() -> str | None:
        return trace(stack, key, request_id).get("payload_url")

    return wait_for(check, timeout=30)


def objects(endpoint: S3Endpoint, prefix: str) -> dict[str, bytes]:
    s3 = s3_client(endpoint)
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=STACK_BUCKET, Prefix=prefix)
            for item in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=STACK_BUCKET, Key=key)["Body"].read() for key in keys}


def with_signature(url: str, change: Any) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    change(query)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def test_archive_is_ciphertext_and_the_link_returns_four_layers(stack: Stack, s3_endpoint: S3Endpoint) -> None:
    org, key = org_key(stack, dlp_policy="redact", archive_payloads=True)
    canary = f"canary-{uuid.uuid4().hex}"
    raw = client(stack, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{ECHO}{canary} mail {EMAIL}"}])
    request_id, answer = raw.headers["x-request-id"], raw.text
    url = archived_url(stack, key, request_id)

    stored = wait_for(lambda: objects(s3_endpoint, f"{org}/"))
    assert len(stored) == 1 and next(iter(stored)).endswith(f"/{request_id}")
    blob = next(iter(stored.values()))
    assert canary.encode() not in blob and EMAIL.encode() not in blob  # ciphertext only

    status, archive = fetch(url)
    assert status == 200, archive
    layers = archive["layers"]
    assert set(layers) == {"caller_request", "upstream_request", "upstream_response", "caller_response"}
    assert EMAIL in layers["caller_request"] and canary in layers["caller_request"]
    assert EMAIL not in layers["upstream_request"] and "[EMAIL_1]" in layers["upstream_request"]
    assert "[EMAIL_1]" in layers["upstream_response"]
    assert json.loads(layers["caller_response"]) == json.loads(answer)
    assert archive["request_id"] == request_id and archive["organization_id"] == org
    assert archive["redactions"] == 1


def test_stream_layers_are_the_raw_event_streams(stack: Stack) -> None:
    _, key = org_key(stack, archive_payloads=True)
    raw = client(stack, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream please."}], stream=True)
    request_id = raw.headers["x-request-id"]
    received = b"".join(raw.http_response.iter_bytes()).decode()
    status, archive = fetch(archived_url(stack, key, request_id))
    assert status == 200
    assert archive["stream"] is True
    assert archive["layers"]["caller_response"] == received
    assert archive["layers"]["upstream_response"].rstrip().endswith("data: [DONE]")
    assert archive["layers"]["upstream_response"].count("data: ") >= 3


def test_tampered_and_foreign_links_are_403_and_a_refetch_mints_a_new_link(stack: Stack) -> None:
    _, key = org_key(stack, archive_payloads=True)
    _, request_id = _request(stack, key)
    url = archived_url(stack, key, request_id)

    def flip(query: dict[str, str]) -> None:
        sig = query["sig"]
        query["sig"] = sig[:-1] + ("A" if sig[-1] != "A" else "B")

    assert fetch(with_signature(url, flip))[0] == 403
    assert fetch(with_signature(url, lambda q: q.update(expires=str(int(q["expires"]) + 60))))[0] == 403

    other_org, other_key = org_key(stack, archive_payloads=True)
    _, other_request = _request(stack, other_key)
    other_url = archived_url(stack, other_key, other_request)
    swapped = with_signature(other_url, lambda q: q.update(org=urllib.parse.parse_qs(
        urllib.parse.urlsplit(url).query)["org"][0]))
    assert fetch(swapped)[0] == 403  # another org's signature does not open this org's archive
    assert fetch(url.replace(request_id, other_request))[0] == 403
    status, body = http_get_trace_as(stack, other_key, request_id)
    assert status == 404  # nor does another org's key see the trace (or its link)

    time.sleep(1.1)
    fresh = archived_url(stack, key, request_id)
    assert fresh != url and fetch(fresh)[0] == 200


def test_keys_without_archiving_get_no_link(stack: Stack) -> None:
    _, key = org_key(stack)
    _, request_id = _request(stack, key)
    time.sleep(0.5)
    assert trace(stack, key, request_id).get("payload_url") is None


def _request(stack: Stack, key: str) -> tuple[str, str]:
    raw = client(stack, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
    return raw.text, raw.headers["x-request-id"]


def http_get_trace_as(stack: Stack, key: str, request_id: str) -> tuple[int, Any]:
    return http_json("GET", f"{stack.proxy_url}/v1/traces/{request_id}", token=key)


def test_an_expired_link_is_403(stack: Stack) -> None:
    org, key = org_key(stack, archive_payloads=True)
    _, request_id = _request(stack, key)
    archived_url(stack, key, request_id)  # the object exists
    keys = links.derive_link_keys(envelope.parse_master_keys(stack.secrets["ROUTEUR_MASTER_KEY"]))
    valid = links.mint(org, request_id, keys=keys, ttl_s=60, now_s=time.time())
    expired = links.mint(org, request_id, keys=keys, ttl_s=1, now_s=time.time() - 2)
    assert fetch(stack.proxy_url + valid.path)[0] == 200  # minted the same way, only the expiry differs
    status, body = fetch(stack.proxy_url + expired.path)
    assert status == 403 and body["error"]["code"] == "invalid_payload_link"
