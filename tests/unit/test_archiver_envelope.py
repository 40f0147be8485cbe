"""Envelope encryption of payload archives: round trip, tamper and AAD checks, key rotation, key parsing."""

from __future__ import annotations

import base64
import os

import pytest

from proto.payload import PayloadArchive
from services.archiver import objects
from services.archiver.envelope import (
    MAGIC,
    VERSION,
    KeyRing,
    MasterKey,
    envelope_kid,
    open_sealed,
    parse_master_keys,
    seal,
)
from services.archiver.errors import InvalidMasterKey, MalformedEnvelope, TamperedEnvelope, UnknownKeyId
from services.archiver.settings import load, require_master_keys
from services.common.ids import new_ulid
from services.common.settings import SettingsError

CANARY = b"canary-7f3e9b1c-plaintext-must-not-appear"


def key_text(kid: str, key: bytes | None = None) -> str:
    return f"{kid}:{base64.b64encode(key if key is not None else os.urandom(32)).decode()}"


@pytest.fixture
def ring() -> KeyRing:
    return parse_master_keys(key_text("k1"))


def test_round_trip(ring: KeyRing) -> None:
    request_id = new_ulid()
    for plaintext in (b"", b"x", CANARY * 1000, os.urandom(70_000)):
        blob = seal(plaintext, request_id, ring)
        assert open_sealed(blob, request_id, ring) == plaintext
        assert blob.startswith(MAGIC + bytes((VERSION, 2)) + b"k1") and envelope_kid(blob) == "k1"


def test_ciphertext_hides_the_plaintext_and_is_fresh_each_time(ring: KeyRing) -> None:
    request_id = new_ulid()
    first, second = seal(CANARY * 10, request_id, ring), seal(CANARY * 10, request_id, ring)
    assert CANARY not in first and CANARY[:12] not in first
    assert first != second  # a fresh data key and nonces per object


def test_an_archive_round_trips_through_its_stored_encoding(ring: KeyRing) -> None:
    archive = PayloadArchive(request_id=new_ulid(), organization_id="org_a", timestamp_ms=1, caller_request=CANARY,
                             upstream_request=b"{}", upstream_response=b"\xff\xfe", caller_response=b"ok",
                             api_key_id="key_1", endpoint="/v1/chat/completions", status_code=200)
    blob = seal(objects.encode_archive(archive), archive.request_id, ring)
    assert CANARY not in blob
    assert objects.decode_archive(open_sealed(blob, archive.request_id, ring)) == archive


@pytest.mark.parametrize("where", ["magic", "kid", "wrap_nonce", "wrapped_key", "data_nonce", "ciphertext", "tag"])
def test_one_changed_byte_anywhere_is_refused(ring: KeyRing, where: str) -> None:
    request_id = new_ulid()
    blob = bytearray(seal(CANARY, request_id, ring))
    offsets = {"magic": 0, "kid": 6, "wrap_nonce": 8, "wrapped_key": 30, "data_nonce": 70, "ciphertext": 82,
               "tag": len(blob) - 1}
    blob[offsets[where]] ^= 0x01
    with pytest.raises((TamperedEnvelope, MalformedEnvelope, UnknownKeyId)):
        open_sealed(bytes(blob), request_id, ring)


def test_a_changed_ciphertext_byte_is_a_tamper_error(ring: KeyRing) -> None:
    request_id = new_ulid()
    blob = bytearray(seal(CANARY, request_id, ring))
    blob[-20] ^= 0x80
    with pytest.raises(TamperedEnvelope, match="failed authentication"):
        open_sealed(bytes(blob), request_id, ring)


def test_another_request_id_does_not_open(ring: KeyRing) -> None:
    blob = seal(CANARY, new_ulid(), ring)
    with pytest.raises(TamperedEnvelope, match="another request id"):
        open_sealed(blob, new_ulid(), ring)


def test_truncated_or_foreign_bytes_are_malformed(ring: KeyRing) -> None:
    request_id = new_ulid()
    blob = seal(b"abc", request_id, ring)
    with pytest.raises(MalformedEnvelope, match="truncated"):
        open_sealed(blob[:60], request_id, ring)
    with pytest.raises(MalformedEnvelope, match="magic"):
        open_sealed(b'{"request_id": "x"}', request_id, ring)
    with pytest.raises(MalformedEnvelope, match="version 9"):
        open_sealed(blob[:4] + b"\x09" + blob[5:], request_id, ring)


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    k1, k2 = key_text("k1"), key_text("k2")
    request_id = new_ulid()
    old = seal(CANARY, request_id, parse_master_keys(k1))
    rotated = parse_master_keys(f"{k2},{k1}")
    assert rotated.active.kid == "k2"
    assert open_sealed(old, request_id, rotated) == CANARY
    new = seal(CANARY, request_id, rotated)
    assert envelope_kid(new) == "k2" and open_sealed(new, request_id, rotated) == CANARY
    with pytest.raises(UnknownKeyId, match="'k2'") as info:
        open_sealed(new, request_id, parse_master_keys(k1))
    assert info.value.kid == "k2"


def test_same_kid_with_another_key_does_not_open() -> None:
    request_id = new_ulid()
    blob = seal(CANARY, request_id, parse_master_keys(key_text("k1")))
    with pytest.raises(TamperedEnvelope):
        open_sealed(blob, request_id, parse_master_keys(key_text("k1")))


def test_key_formats_accepted() -> None:
    raw = os.urandom(32)
    for text in (f"k1:{base64.b64encode(raw).decode()}", f" k1:{base64.urlsafe_b64encode(raw).decode().rstrip('=')} ",
                 f"prod-2025.01:{base64.b64encode(raw).decode()}"):
        ring = parse_master_keys(text)
        assert ring.active.reveal() == raw


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("   ", "is empty"),
    ("k1", "does not start with a key id"),
    (":" + base64.b64encode(b"s" * 32).decode(), "does not start with a key id"),
    ("bad kid:" + base64.b64encode(b"s" * 32).decode(), "does not start with a key id"),
    ("k1:not*base64*at*all", "not valid base64"),
    ("k1:" + base64.b64encode(b"s" * 16).decode(), "decodes to 16 bytes"),
    ("k1:" + base64.b64encode(b"s" * 33).decode(), "decodes to 33 bytes"),
    (key_text("k1") + "," + key_text("k1"), "listed twice"),
    (key_text("k1") + ",", "entry 2 is empty"),
])
def test_malformed_keys_are_refused_without_echoing_material(text: str, message: str) -> None:
    with pytest.raises(InvalidMasterKey, match=message) as info:
        parse_master_keys(text)
    error = str(info.value)
    assert "ROUTEUR_MASTER_KEY" in error
    for part in text.replace(",", ":").split(":")[1:]:
        if len(part) > 8:
            assert part not in error


def test_keys_never_print() -> None:
    raw = os.urandom(32)
    ring = parse_master_keys(key_text("k1", raw))
    encoded = base64.b64encode(raw).decode()
    for shown in (repr(ring), str(ring), repr(ring.active), str(ring.active)):
        assert encoded not in shown and repr(raw) not in shown and "k1" in shown
    with pytest.raises(InvalidMasterKey):
        MasterKey("k1", b"short")
    with pytest.raises(InvalidMasterKey):
        KeyRing([])


def test_settings_parse_the_key_and_fail_fast_when_missing_or_malformed() -> None:
    raw = key_text("k1")
    settings = load({"ROUTEUR_MASTER_KEY": raw})
    assert require_master_keys(settings).active.kid == "k1"
    assert raw.split(":")[1] not in repr(settings)
    assert (settings.url_ttl_s, settings.retention_days, settings.sweep_interval_s, settings.batch) == (
        900, 30, 3600.0, 64)
    with pytest.raises(SettingsError, match="ROUTEUR_MASTER_KEY is required"):
        require_master_keys(load({}))
    with pytest.raises(SettingsError, match="ROUTEUR_MASTER_KEY: key 'k1' decodes to 3 bytes"):
        load({"ROUTEUR_MASTER_KEY": "k1:YWJj"})
    with pytest.raises(SettingsError, match="ROUTEUR_PAYLOAD_LINK_KEY must be at least 32"):
        load({"ROUTEUR_MASTER_KEY": raw, "ROUTEUR_PAYLOAD_LINK_KEY": "short"})
    with pytest.raises(SettingsError, match="PAYLOAD_URL_TTL_S must be between"):
        load({"ROUTEUR_MASTER_KEY": raw, "PAYLOAD_URL_TTL_S": "0"})
    with pytest.raises(SettingsError, match="ARCHIVER_RETENTION_DAYS must be between"):
        load({"ROUTEUR_MASTER_KEY": raw, "ARCHIVER_RETENTION_DAYS": "-1"})
