"""Key ring, ULIDs, and decoding yesterday's bus messages with today's schema."""

from __future__ import annotations

import time
from decimal import Decimal

from proto import codec
from proto.trace import TraceEvent
from services.common.ids import is_ulid, new_ulid
from services.common.settings import Secret
from services.proxy.auth import ADMIN, KeyRing, Principal


def test_key_ring_authenticates_keys_and_admin() -> None:
    ring = KeyRing({"rk-a": Principal("org_1", "key_a"), "rk-b": Principal("org_2", "key_b")}, admin_token="adm")
    assert ring.authenticate("Bearer rk-a") == Principal("org_1", "key_a")
    assert ring.authenticate("Bearer rk-b") == Principal("org_2", "key_b")
    assert ring.authenticate("Bearer rk-c") is None
    assert ring.authenticate("rk-a") is None and ring.authenticate(None) is None
    assert ring.authenticate("Bearer adm") is None
    assert ring.authenticate("Bearer adm", allow_admin=True) == ADMIN


def test_secret_never_prints() -> None:
    secret = Secret("rk-very-secret")
    assert "very" not in repr(secret) and "very" not in str(secret) and "very" not in f"{secret}"
    assert secret.reveal() == "rk-very-secret"


def test_ulids_are_valid_unique_and_time_ordered() -> None:
    first = new_ulid()
    time.sleep(0.002)
    ids = [new_ulid() for _ in range(1000)]
    assert all(is_ulid(i) for i in ids) and len(set(ids)) == 1000
    assert all(first < i for i in ids)
    assert not is_ulid("../../etc/passwd") and not is_ulid("8" + "0" * 25)


def test_yesterdays_trace_message_still_decodes() -> None:
    """A message with only the fields of the first schema version decodes with defaults for the rest."""
    old = (b'{"request_id":"01J","timestamp_ms":1,"organization_id":"o","api_key_id":"k","endpoint":"/v1/x",'
           b'"requested_model":"auto","model":"m","provider":"p","upstream_model":"m","route_reason":"default",'
           b'"status_code":200,"stream":false,"latency_ms":2.5,"upstream_latency_ms":1.0,"cost_usd":0.00000615}')
    event = codec.decode(old, TraceEvent)
    assert event.cost_usd == Decimal("0.00000615") and event.redactions == 0 and event.attempts == ()
    assert codec.decode(codec.encode(event), TraceEvent) == event
