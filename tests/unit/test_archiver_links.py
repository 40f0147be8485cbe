"""Signed payload links and the object key they resolve to."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from proto.payload import PayloadArchive
from services.archiver import links, objects
from services.archiver.envelope import parse_master_keys
from services.archiver.errors import InvalidKey, InvalidLink
from services.archiver.links import derive_link_keys, mint, verify
from services.common.ids import new_ulid

NOW = 1_750_000_000.0
ORG = "org_acme"


def master(kid: str = "k1") -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def split(path: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(path)
    assert parts.path.startswith(links.PATH_PREFIX)
    return parts.path.removeprefix(links.PATH_PREFIX), dict(parse_qsl(parts.query))


@pytest.fixture
def keys() -> links.LinkKeys:
    return derive_link_keys(parse_master_keys(master()))


@pytest.fixture
def link(keys: links.LinkKeys) -> tuple[str, dict[str, str]]:
    return split(mint(ORG, new_ulid(), keys=keys, ttl_s=900, now_s=NOW).path)


def test_a_minted_link_verifies(keys: links.LinkKeys) -> None:
    request_id = new_ulid()
    minted = mint(ORG, request_id, keys=keys, ttl_s=900, now_s=NOW)
    assert minted.expires == int(NOW) + 900
    path_id, query = split(minted.path)
    assert path_id == request_id and set(query) == {"org", "expires", "sig"}
    assert query["org"] == ORG and query["expires"] == str(minted.expires) and len(query["sig"]) == 43
    claims = verify(request_id, query, keys=keys, now_s=NOW + 899)
    assert claims == links.Claims(organization_id=ORG, request_id=request_id, expires=minted.expires)
    assert verify(request_id, {**query, "utm_source": "mail"}, keys=keys, now_s=NOW).organization_id == ORG


def test_an_expired_link_is_invalid(keys: links.LinkKeys, link: tuple[str, dict[str, str]]) -> None:
    request_id, query = link
    with pytest.raises(InvalidLink) as info:
        verify(request_id, query, keys=keys, now_s=NOW + 900)
    assert info.value.reason == "expired"


def test_a_past_expiry_minted_directly_is_invalid(keys: links.LinkKeys) -> None:
    request_id = new_ulid()
    _, query = split(mint(ORG, request_id, keys=keys, ttl_s=1, now_s=NOW - 60).path)
    with pytest.raises(InvalidLink, match="expired"):
        verify(request_id, query, keys=keys, now_s=NOW)


@pytest.mark.parametrize("position", [0, 10, 21, 41, 42])
def test_one_changed_character_in_the_signature_is_invalid(keys: links.LinkKeys, link: tuple[str, dict[str, str]],
                                                           position: int) -> None:
    request_id, query = link
    sig = query["sig"]
    for replacement in "AQgw_-":  # includes characters that differ from the original only in unused bits
        if replacement == sig[position]:
            continue
        forged = sig[:position] + replacement + sig[position + 1:]
        with pytest.raises(InvalidLink, match="bad_signature"):
            verify(request_id, {**query, "sig": forged}, keys=keys, now_s=NOW)


def test_a_changed_org_expiry_or_request_id_is_invalid(keys: links.LinkKeys, link: tuple[str, dict[str, str]]) -> None:
    request_id, query = link
    for forged_id, forged in [
        (request_id, {**query, "org": "org_other"}),
        (request_id, {**query, "org": ORG + "x"}),
        (request_id, {**query, "expires": str(int(query["expires"]) + 1)}),
        (new_ulid(), query),
        (request_id[:-1] + ("A" if request_id[-1] != "A" else "B"), query),
    ]:
        with pytest.raises(InvalidLink, match="bad_signature"):
            verify(forged_id, forged, keys=keys, now_s=NOW)


def test_another_orgs_link_does_not_open_this_orgs_request(keys: links.LinkKeys) -> None:
    mine, theirs = new_ulid(), new_ulid()
    _, their_query = split(mint("org_other", theirs, keys=keys, ttl_s=900, now_s=NOW).path)
    with pytest.raises(InvalidLink, match="bad_signature"):
        verify(mine, their_query, keys=keys, now_s=NOW)
    with pytest.raises(InvalidLink, match="bad_signature"):
        verify(mine, {**their_query, "org": ORG}, keys=keys, now_s=NOW)


@pytest.mark.parametrize("missing", ["org", "expires", "sig"])
def test_a_missing_parameter_is_invalid(keys: links.LinkKeys, link: tuple[str, dict[str, str]], missing: str) -> None:
    request_id, query = link
    with pytest.raises(InvalidLink, match="missing"):
        verify(request_id, {k: v for k, v in query.items() if k != missing}, keys=keys, now_s=NOW)
    with pytest.raises(InvalidLink, match="missing"):
        verify(request_id, {**query, missing: ""}, keys=keys, now_s=NOW)


@pytest.mark.parametrize(("field", "value"), [
    ("expires", "-5"), ("expires", "0900"), ("expires", "1e10"), ("expires", "١٢٣"), ("expires", "9" * 13),
    ("org", "../etc"), ("org", "org a"), ("org", "o" * 129),
])
def test_malformed_parameters_are_invalid(keys: links.LinkKeys, link: tuple[str, dict[str, str]], field: str,
                                          value: str) -> None:
    request_id, query = link
    with pytest.raises(InvalidLink, match="malformed"):
        verify(request_id, {**query, field: value}, keys=keys, now_s=NOW)
    with pytest.raises(InvalidLink, match="malformed"):
        verify("not-a-ulid", query, keys=keys, now_s=NOW)


def test_links_survive_a_master_key_rotation_and_a_separate_link_key_is_independent() -> None:
    k1, k2 = master("k1"), master("k2")
    request_id = new_ulid()
    before = mint(ORG, request_id, keys=derive_link_keys(parse_master_keys(k1)), ttl_s=900, now_s=NOW)
    after = derive_link_keys(parse_master_keys(f"{k2},{k1}"))
    assert verify(request_id, split(before.path)[1], keys=after, now_s=NOW).organization_id == ORG
    with pytest.raises(InvalidLink):
        verify(request_id, split(before.path)[1], keys=derive_link_keys(parse_master_keys(k2)), now_s=NOW)
    separate = derive_link_keys(parse_master_keys(k1), "a-separate-link-secret-of-32-chars!!")
    with pytest.raises(InvalidLink):
        verify(request_id, split(before.path)[1], keys=separate, now_s=NOW)
    own = mint(ORG, request_id, keys=separate, ttl_s=900, now_s=NOW)
    assert verify(request_id, split(own.path)[1], keys=separate, now_s=NOW).request_id == request_id
    assert "secret" not in repr(separate)


def test_minting_refuses_ids_that_cannot_be_archived(keys: links.LinkKeys) -> None:
    with pytest.raises(InvalidKey):
        mint("org/../x", new_ulid(), keys=keys, ttl_s=900, now_s=NOW)
    with pytest.raises(InvalidKey):
        mint(ORG, "req_1", keys=keys, ttl_s=900, now_s=NOW)


# ------------------------------------------------------------------------------------- object keys


def test_object_key_is_dated_by_the_request_ids_ulid() -> None:
    stamp = datetime(2025, 3, 9, 23, 59, 59, 999_000, tzinfo=UTC)
    request_id = new_ulid(int(stamp.timestamp() * 1000))
    assert objects.object_key(ORG, request_id) == f"{ORG}/2025/03/09/{request_id}"
    assert objects.object_key("o", new_ulid(0)).startswith("o/1970/01/01/")


@pytest.mark.parametrize(("org", "request_id"), [
    ("", None), ("../x", None), ("a/b", None), (".hidden", None), ("org\x00", None), ("é", None),
    (ORG, ""), (ORG, "01ARZ3NDEKTSV4RRFFQ69G5FA"), (ORG, "01arz3ndektsv4rrffq69g5fav"), (ORG, "../../etc/passwd"),
    (ORG, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"),  # a ULID past year 9999
])
def test_object_key_refuses_bad_ids(org: str, request_id: str | None) -> None:
    with pytest.raises(InvalidKey):
        objects.object_key(org, request_id if request_id is not None else new_ulid())


def test_fetch_body_has_every_layer_as_text_or_base64() -> None:
    import json

    archive = PayloadArchive(request_id=new_ulid(), organization_id=ORG, timestamp_ms=5,
                             caller_request='{"messages": [{"content": "héllo \\"q\\""}]}'.encode(),
                             upstream_request=b"{}", upstream_response=b"data: {}\n\ndata: [DONE]\n\n",
                             caller_response=b"\x00\xff binary", api_key_id="key_1", endpoint="/v1/chat/completions",
                             stream=True, status_code=200, redactions=2, truncated=True)
    body = json.loads(objects.fetch_body(archive))
    assert body["layers"]["caller_request"] == archive.caller_request.decode()
    assert body["layers"]["upstream_response"] == "data: {}\n\ndata: [DONE]\n\n"
    assert base64.b64decode(body["layers"]["caller_response"]["base64"]) == archive.caller_response
    assert {k: body[k] for k in ("request_id", "organization_id", "api_key_id", "timestamp_ms", "endpoint", "stream",
                                 "status_code", "redactions", "truncated")} == {
        "request_id": archive.request_id, "organization_id": ORG, "api_key_id": "key_1", "timestamp_ms": 5,
        "endpoint": "/v1/chat/completions", "stream": True, "status_code": 200, "redactions": 2, "truncated": True}
