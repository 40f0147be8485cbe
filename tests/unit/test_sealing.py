"""Sealed boxes (services/common/sealing.py): round trip, and every way a box must refuse to open."""

from __future__ import annotations

import pytest

from services.common import sealing
from services.common.sealing import PrivateSealKey, SealKeyRing

AAD = b"01JREQUEST\norg_a"


def test_round_trip_and_a_fresh_ephemeral_key_per_message() -> None:
    key = PrivateSealKey.generate("a1")
    first = sealing.seal(b"canary text", AAD, key.public)
    second = sealing.seal(b"canary text", AAD, key.public)
    assert b"canary" not in first
    assert first[16:48] != second[16:48]  # the ephemeral public keys (after the id and the fingerprint) differ
    assert first[8:16] == second[8:16] == key.public.fingerprint
    assert sealing.sealed_kid(first) == "a1"
    assert sealing.open_sealed(first, AAD, SealKeyRing([key])) == b"canary text"
    assert sealing.open_sealed(second, AAD, SealKeyRing([key])) == b"canary text"


def test_other_associated_data_does_not_open() -> None:
    key = PrivateSealKey.generate("a1")
    box = sealing.seal(b"x", AAD, key.public)
    with pytest.raises(sealing.SealAuthFailed, match="associated data"):
        sealing.open_sealed(box, b"01JREQUEST\norg_b", SealKeyRing([key]))


def test_a_box_for_another_key_under_the_same_id_is_an_unknown_key_not_a_forgery() -> None:
    box = sealing.seal(b"x", AAD, PrivateSealKey.generate("a1").public)
    with pytest.raises(sealing.UnknownSealKey, match="another public key under id 'a1'"):
        sealing.open_sealed(box, AAD, SealKeyRing([PrivateSealKey.generate("a1")]))


def test_a_changed_fingerprint_does_not_make_another_key_open_it() -> None:
    real, other = PrivateSealKey.generate("a1"), PrivateSealKey.generate("a1")
    box = bytearray(sealing.seal(b"x", AAD, real.public))
    box[8:16] = other.public.fingerprint
    with pytest.raises(sealing.SealAuthFailed):
        sealing.open_sealed(bytes(box), AAD, SealKeyRing([other]))


@pytest.mark.parametrize("position", [0, 4, 6, 8, 20, 50, 60, -1])
def test_any_changed_byte_is_refused(position: int) -> None:
    key = PrivateSealKey.generate("a1")
    box = bytearray(sealing.seal(b"some plaintext", AAD, key.public))
    box[position] ^= 0x01
    with pytest.raises(sealing.SealingError):
        sealing.open_sealed(bytes(box), AAD, SealKeyRing([key]))


def test_truncated_and_foreign_bytes_are_malformed() -> None:
    key = PrivateSealKey.generate("a1")
    box = sealing.seal(b"x", AAD, key.public)
    with pytest.raises(sealing.MalformedSealed, match="truncated"):
        sealing.open_sealed(box[:30], AAD, SealKeyRing([key]))
    with pytest.raises(sealing.MalformedSealed, match="magic"):
        sealing.open_sealed(b'{"request_id": "x"}', AAD, SealKeyRing([key]))
    assert not sealing.is_sealed(b'{"request_id": "x"}')
    assert sealing.is_sealed(box)


def test_rotation_keeps_old_boxes_open_and_names_an_unknown_key() -> None:
    old, new = PrivateSealKey.generate("k1"), PrivateSealKey.generate("k2")
    before = sealing.seal(b"before", AAD, old.public)
    ring = sealing.parse_private_keys(f"{new.text()},{old.text()}", variable="ARCHIVER_SEAL_KEY")
    assert ring.active.kid == "k2"
    after = sealing.seal(b"after", AAD, ring.active.public)
    assert sealing.open_sealed(before, AAD, ring) == b"before"
    assert sealing.open_sealed(after, AAD, ring) == b"after"
    only_new = sealing.parse_private_keys(new.text(), variable="ARCHIVER_SEAL_KEY")
    with pytest.raises(sealing.UnknownSealKey, match="'k1'") as raised:
        sealing.open_sealed(before, AAD, only_new)
    assert raised.value.kid == "k1"


def test_key_text_round_trips_and_errors_name_the_variable_not_the_key() -> None:
    key = PrivateSealKey.generate("k1")
    public = sealing.parse_public_key(key.public.text(), variable="PROXY_ARCHIVE_PUBLIC_KEY")
    assert public.raw == key.public.raw and public.kid == "k1"
    assert "k1:" not in repr(key) and key.text().split(":")[1] not in repr(key)
    with pytest.raises(sealing.InvalidSealKey, match="ARCHIVER_SEAL_KEY: key 'k1' is not base64 of 32 bytes"):
        sealing.parse_private_keys("k1:c2hvcnQ=", variable="ARCHIVER_SEAL_KEY")
    with pytest.raises(sealing.InvalidSealKey, match="ARCHIVER_SEAL_KEY: key ids must be unique"):
        sealing.parse_private_keys(f"{key.text()},{key.text()}", variable="ARCHIVER_SEAL_KEY")
    with pytest.raises(sealing.InvalidSealKey, match="PROXY_ARCHIVE_PUBLIC_KEY holds one key"):
        sealing.parse_public_key(f"{key.public.text()},{key.public.text()}", variable="PROXY_ARCHIVE_PUBLIC_KEY")
    with pytest.raises(sealing.InvalidSealKey, match="PROXY_ARCHIVE_PUBLIC_KEY is empty"):
        sealing.parse_public_key(" ", variable="PROXY_ARCHIVE_PUBLIC_KEY")
