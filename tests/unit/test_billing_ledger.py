"""The billing core: keys stored as HMACs, wallets, reservations that never overshoot, idempotent settles, replay."""

from __future__ import annotations

import hashlib
import hmac
import random
from decimal import Decimal

import msgspec
import pytest

from proto import codec
from proto.billing import KeyLimits, KeySettings, KeysQuery, LedgerEvent, decode_event
from services.billing import errors, overview
from services.billing.ledger import Ledger, effective_settings
from services.billing.state import KeyState, LedgerState
from services.billing.validate import KeyPatch, OrgPatch
from services.common.ids import is_ulid

SERVER_SECRET = b"unit-test-server-secret-0123456789abcdef"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
T0_MS = int(T0 * 1000)
D = Decimal


class Book:
    """A ledger plus the list of events applied to it, so a test can replay them elsewhere."""

    def __init__(self, **kwargs: object) -> None:
        self.ledger = Ledger(key_secret=SERVER_SECRET, **kwargs)  # type: ignore[arg-type]
        self.events: list[LedgerEvent] = []

    def do(self, event: LedgerEvent | None) -> None:
        assert event is not None
        self.events.append(event)
        assert self.ledger.apply(event)

    def org(self, org_id: str = "org_a", funds: str = "10") -> str:
        self.do(self.ledger.create_org(now_ms=T0_MS, org_id=org_id, name="A"))
        if D(funds):
            self.do(self.ledger.top_up(org_id, D(funds), now_ms=T0_MS))
        return org_id

    def key(self, org_id: str = "org_a", **limits: object) -> tuple[KeyState, str]:
        event, secret = self.ledger.create_key(org_id, now_ms=T0_MS, name="k", limits=KeyLimits(**limits))  # type: ignore[arg-type]
        self.do(event)
        key = self.ledger.key(event.api_key_id)
        assert key is not None
        return key, secret

    def settle(self, request_id: str, cost: str, tokens: int = 0, now: float = T0, **kw: str) -> bool:
        event = self.ledger.settlement(request_id, D(cost), tokens, now_ms=int(now * 1000), **kw)
        if event is None:
            return False
        self.events.append(event)
        return self.ledger.apply(event)


def test_key_secret_is_stored_only_as_hmac() -> None:
    book = Book()
    book.org()
    key, secret = book.key()
    assert secret.startswith("rk-") and len(secret) >= 3 + 43
    assert key.id.startswith("key_01") and is_ulid(key.id[4:])
    assert key.digest == hmac.new(SERVER_SECRET, secret.encode(), hashlib.sha256).hexdigest()
    state_bytes = codec.encode(book.ledger.state) + b"".join(codec.encode(e) for e in book.events)
    assert secret.encode() not in state_bytes and secret[3:].encode() not in state_bytes
    assert book.ledger.authenticate(secret) is key
    assert book.ledger.authenticate(secret + "x") is None and book.ledger.authenticate("") is None
    other = Ledger(key_secret=b"another-server-secret-0123456789abcdef")
    assert other.digest(secret) != key.digest


def test_imported_secret_and_duplicates() -> None:
    book = Book()
    book.org()
    secret = "rk-" + "a" * 43
    event, returned = book.ledger.create_key("org_a", now_ms=T0_MS, secret=secret)
    book.do(event)
    assert returned == secret and book.ledger.authenticate(secret) is not None
    with pytest.raises(errors.Conflict, match="already exists"):
        book.ledger.create_key("org_a", now_ms=T0_MS, secret=secret)
    with pytest.raises(errors.InvalidRequest, match="imported secret"):
        book.ledger.create_key("org_a", now_ms=T0_MS, secret="rk-short")
    with pytest.raises(errors.NotFound, match="org_zz"):
        book.ledger.create_key("org_zz", now_ms=T0_MS)


def test_invalid_revoked_and_disabled_keys_are_refused() -> None:
    book = Book()
    book.org()
    key, secret = book.key()
    assert book.ledger.admit("nope", "r0", D(0), 0, T0).code == errors.INVALID_API_KEY
    book.do(book.ledger.update_key(key.id, KeyPatch(enabled=False), now_ms=T0_MS))
    refused = book.ledger.admit(key.id, "r1", D(0), 0, T0)
    assert refused.code == errors.INVALID_API_KEY and refused.status == 401 and "disabled" in (refused.message or "")
    assert book.ledger.authenticate(secret) is None
    book.do(book.ledger.update_key(key.id, KeyPatch(enabled=True), now_ms=T0_MS))
    assert book.ledger.admit(book.ledger.digest(secret), "r2", D(0), 0, T0).admitted
    book.do(book.ledger.revoke_key(key.id, now_ms=T0_MS))
    assert book.ledger.revoke_key(key.id, now_ms=T0_MS) is None
    assert "revoked" in (book.ledger.admit(key.id, "r3", D(0), 0, T0).message or "")
    with pytest.raises(errors.Conflict, match="revoked"):
        book.ledger.update_key(key.id, KeyPatch(rate_limit_rpm=5), now_ms=T0_MS)


def test_wallet_balance_minus_open_reservations_bounds_admission() -> None:
    book = Book()
    book.org(funds="1")
    key, _ = book.key()
    admitted = [book.ledger.admit(key.id, f"r{i}", D("0.3"), 0, T0).admitted for i in range(5)]
    assert admitted == [True, True, True, False, False]
    refused = book.ledger.admit(key.id, "r9", D("0.3"), 0, T0)
    assert (refused.code, refused.status, refused.type) == ("insufficient_quota", 402, "insufficient_quota")
    assert book.ledger.admit(key.id, "small", D("0.1"), 0, T0).admitted  # exactly what is left
    assert book.ledger.reserved_usd(org_id="org_a") == D("1.0")
    assert book.settle("r0", "0.05")
    assert book.ledger.admit(key.id, "r10", D("0.25"), 0, T0).admitted
    empty = Book()
    empty.org(funds="0")
    key, _ = empty.key()
    assert empty.ledger.admit(key.id, "r", D(0), 0, T0).code == "insufficient_quota"


def test_many_admits_before_any_settle_never_exceed_max_spend() -> None:
    book = Book()
    book.org(funds="100")
    key, _ = book.key(max_spend_usd=D("0.50"))
    results = [book.ledger.admit(key.id, f"r{i}", D("0.01"), 0, T0) for i in range(300)]
    admitted = [f"r{i}" for i, r in enumerate(results) if r.admitted]
    assert len(admitted) == 50
    refused = next(r for r in results if not r.admitted)
    assert (refused.code, refused.status) == ("budget_exceeded", 429)
    for request_id in admitted:
        assert book.settle(request_id, "0.01")
    assert key.spent_usd == D("0.50")
    assert book.ledger.admit(key.id, "more", D(0), 0, T0).code == "budget_exceeded"


def test_random_interleavings_keep_spend_within_max_and_balance_exact() -> None:
    rng = random.Random(5)  # noqa: S311 (a seeded, reproducible schedule, not cryptography)
    for _ in range(20):
        book = Book(reservation_ttl_s=5.0)
        book.org(funds=str(rng.choice([1, 3, 100])))
        key, _ = book.key(max_spend_usd=D("0.50"), period=rng.choice(["total", "day"]))
        ledger, now, open_ids, settled_total = book.ledger, T0, [], D(0)
        for step in range(600):
            now += rng.random() * 0.05
            choice = rng.random()
            if choice < 0.55:
                reserve = D(rng.randint(1, 30)) / 1000
                if ledger.admit(key.id, f"r{step}", reserve, 0, now).admitted:
                    open_ids.append((f"r{step}", reserve))
            elif choice < 0.95 and open_ids:
                request_id, reserve = open_ids.pop(rng.randrange(len(open_ids)))
                cost = reserve * D(rng.randint(0, 100)) / 100
                if book.settle(request_id, str(cost), now=now):
                    settled_total += cost
                if rng.random() < 0.2:  # a retried settle changes nothing
                    assert not book.settle(request_id, str(cost), now=now)
            else:  # time passes; abandoned reservations expire and are never settled
                now += rng.random() * 3
                ledger.expire(now)
                open_ids = [(r, x) for r, x in open_ids if ledger.has_reservation(r)]
            reserved = ledger.reserved_usd(key_id=key.id)
            assert key.spent_usd + reserved <= D("0.50")
            org = ledger.org("org_a")
            assert org.balance_usd - ledger.reserved_usd(org_id="org_a") >= 0
        assert ledger.org("org_a").balance_usd == ledger.org("org_a").topped_up_usd - settled_total


def test_settle_is_idempotent_and_releases_the_reservation() -> None:
    book = Book()
    book.org(funds="5")
    key, _ = book.key(max_spend_usd=D(1))
    assert book.ledger.admit(key.id, "r1", D("0.4"), 0, T0).admitted
    assert book.ledger.reserved_usd(key_id=key.id) == D("0.4")
    assert book.settle("r1", "0.123456789012", 42)
    assert not book.settle("r1", "0.123456789012", 42)
    assert not book.ledger.apply(book.events[-1])  # the same event redelivered
    assert book.ledger.reserved_usd(key_id=key.id) == 0 and book.ledger.open_reservations == 0
    org = book.ledger.org("org_a")
    assert org.balance_usd == D("4.876543210988") and org.spent_usd == D("0.123456789012")
    assert (key.requests, key.tokens) == (1, 42)
    refused = book.ledger.admit(key.id, "r1", D("0.1"), 0, T0)
    assert refused.code == "invalid_request" and "already" in (refused.message or "")


def test_admitting_the_same_request_twice_reserves_once() -> None:
    book = Book()
    book.org(funds="5")
    key, _ = book.key(rate_limit_rpm=10)
    first = book.ledger.admit(key.id, "r1", D("1"), 0, T0)
    again = book.ledger.admit(key.id, "r1", D("1"), 0, T0 + 1)
    assert first.admitted and again.admitted and book.ledger.reserved_usd(org_id="org_a") == D(1)
    assert again.rate_limits.remaining_requests == 9


def test_settle_without_reservation_after_restart_debits_the_named_key() -> None:
    book = Book()
    book.org(funds="5")
    key, _ = book.key()
    assert book.settle("lost", "0.5", 10, api_key_id=key.id, organization_id="org_a")
    assert book.ledger.org("org_a").balance_usd == D("4.5") and key.spent_usd == D("0.5")
    with pytest.raises(errors.NotFound):
        book.ledger.settlement("x", D(1), 0, now_ms=T0_MS, api_key_id="key_nope")
    with pytest.raises(errors.InvalidRequest, match="does not own"):
        book.ledger.settlement("x", D(1), 0, now_ms=T0_MS, api_key_id=key.id, organization_id="org_b")
    with pytest.raises(errors.InvalidRequest, match="cost_usd"):
        book.ledger.settlement("x", D(-1), 0, now_ms=T0_MS, api_key_id=key.id)


def test_reservations_expire_after_their_ttl() -> None:
    book = Book(reservation_ttl_s=30.0)
    book.org(funds="1")
    key, _ = book.key()
    assert book.ledger.admit(key.id, "r1", D(1), 0, T0).admitted
    assert book.ledger.admit(key.id, "r2", D("0.1"), 0, T0 + 1).code == "insufficient_quota"
    assert book.ledger.expire(T0 + 29) == 0
    assert book.ledger.expire(T0 + 30) == 1
    assert book.ledger.reserved_usd(org_id="org_a") == 0
    assert book.ledger.admit(key.id, "r3", D("0.5"), 0, T0 + 31).admitted
    assert book.settle("r1", "0.2", now=T0 + 40, api_key_id=key.id)  # a settle after expiry still debits
    assert book.ledger.org("org_a").balance_usd == D("0.8")


def test_spend_periods_roll_over_at_utc_day_and_month() -> None:
    book = Book()
    book.org(funds="100")
    day_key, _ = book.key(max_spend_usd=D(1), period="day")
    month_key, _ = book.key(max_spend_usd=D(1), period="month")
    total_key, _ = book.key(max_spend_usd=D(1), period="total")
    jan31 = T0 + 30 * 86400 + 3600
    for key in (day_key, month_key, total_key):
        assert book.ledger.admit(key.id, f"{key.id}-1", D(1), 0, jan31).admitted
        assert book.settle(f"{key.id}-1", "1", now=jan31)
        assert book.ledger.admit(key.id, f"{key.id}-2", D("0.01"), 0, jan31).code == "budget_exceeded"
    next_day = jan31 + 86400  # Feb 1st: a new day and a new month
    assert book.ledger.admit(day_key.id, "d", D("0.5"), 0, jan31 + 79200).code == "budget_exceeded"  # Jan 31, 23:00
    assert book.ledger.admit(day_key.id, "d2", D("0.5"), 0, next_day).admitted
    assert book.ledger.admit(month_key.id, "m2", D("0.5"), 0, next_day).admitted
    assert book.ledger.admit(total_key.id, "t2", D("0.01"), 0, next_day).code == "budget_exceeded"
    assert day_key.period_spend("day", int(next_day * 1000)) == 0 and day_key.spent_usd == 1


def test_late_settlement_of_a_previous_day_does_not_count_in_today() -> None:
    book = Book()
    book.org(funds="100")
    key, _ = book.key(max_spend_usd=D(1), period="day")
    assert book.settle("today", "0.3", now=T0 + 86400, api_key_id=key.id)
    assert book.settle("yesterday", "0.5", now=T0 + 100, api_key_id=key.id)
    assert key.period_spend("day", int((T0 + 86400) * 1000)) == D("0.3") and key.spent_usd == D("0.8")


def test_state_is_rebuilt_exactly_from_event_replay_and_snapshot() -> None:
    book = Book()
    book.org(funds="7")
    key, secret = book.key(max_spend_usd=D(2), rate_limit_rpm=100)
    for i in range(20):
        assert book.ledger.admit(key.id, f"r{i}", D("0.05"), 10, T0 + i).admitted
        assert book.settle(f"r{i}", "0.0375", 8, now=T0 + i)
    book.do(book.ledger.adjust("org_a", D("-0.25"), reason="chargeback", now_ms=T0_MS))
    book.do(book.ledger.update_key(key.id, KeyPatch(max_spend_usd=None, token_limit_tpm=1000), now_ms=T0_MS))
    replayed = Ledger(key_secret=SERVER_SECRET)
    for event in [decode_event(codec.encode(e)) for e in book.events]:
        replayed.apply(event)
    assert codec.encode(replayed.state) == codec.encode(book.ledger.state)
    snapshot = codec.decode(codec.encode(book.ledger.state), LedgerState)
    restored = Ledger(key_secret=SERVER_SECRET, state=snapshot)
    assert restored.authenticate(secret) is not None
    assert restored.org("org_a").balance_usd == D(7) - D("0.75") - D("0.25")


def test_top_ups_adjustments_and_their_idempotency() -> None:
    book = Book()
    book.org(funds="0")
    book.do(book.ledger.top_up("org_a", D("2.5"), now_ms=T0_MS, topup_id="invoice-1"))
    assert book.ledger.top_up("org_a", D("2.5"), now_ms=T0_MS, topup_id="invoice-1") is None
    book.do(book.ledger.adjust("org_a", D("-0.5"), reason="refund reversal", now_ms=T0_MS, adjustment_id="adj-1"))
    assert book.ledger.adjust("org_a", D("-0.5"), reason="again", now_ms=T0_MS, adjustment_id="adj-1") is None
    org = book.ledger.org("org_a")
    assert (org.balance_usd, org.topped_up_usd, org.adjusted_usd) == (D(2), D("2.5"), D("-0.5"))


@pytest.mark.parametrize(("amount", "match"), [
    ("-1", "greater than 0"), ("0", "greater than 0"), ("NaN", "finite"), ("Infinity", "finite"),
    ("1e12", "at most"), ("0.0000000000001", "decimal places"),
])
def test_bad_top_up_amounts_are_refused_naming_the_field(amount: str, match: str) -> None:
    book = Book()
    book.org()
    with pytest.raises(errors.InvalidRequest, match=match) as caught:
        book.ledger.top_up("org_a", D(amount), now_ms=T0_MS)
    assert caught.value.param == "amount_usd" and caught.value.status == 400


@pytest.mark.parametrize(("limits", "param"), [
    ({"max_spend_usd": D("-0.01")}, "max_spend_usd"), ({"rate_limit_rpm": 0}, "rate_limit_rpm"),
    ({"token_limit_tpm": -5}, "token_limit_tpm"),
])
def test_bad_limits_are_refused_naming_the_field(limits: dict[str, object], param: str) -> None:
    book = Book()
    book.org()
    with pytest.raises(errors.InvalidRequest) as caught:
        book.ledger.create_key("org_a", now_ms=T0_MS, limits=KeyLimits(**limits))  # type: ignore[arg-type]
    assert caught.value.param == param


def test_bad_ids_names_and_settings() -> None:
    book = Book()
    with pytest.raises(errors.InvalidRequest, match="org_"):
        book.ledger.create_org(now_ms=T0_MS, org_id="acme")
    book.org()
    with pytest.raises(errors.Conflict):
        book.ledger.create_org(now_ms=T0_MS, org_id="org_a")
    with pytest.raises(errors.InvalidRequest, match="reason"):
        book.ledger.adjust("org_a", D(1), reason=" ", now_ms=T0_MS)
    with pytest.raises(errors.InvalidRequest) as caught:
        book.ledger.create_key("org_a", now_ms=T0_MS, settings=KeySettings(dlp_policy="DROP TABLE"))
    assert caught.value.param == "dlp_policy"
    generated = book.ledger.create_org(now_ms=T0_MS)
    assert generated.organization_id.startswith("org_") and is_ulid(generated.organization_id[4:])


def test_key_patch_keeps_absent_fields_and_null_removes_a_limit() -> None:
    book = Book()
    book.org()
    key, _ = book.key(max_spend_usd=D(3), period="month", rate_limit_rpm=60)
    book.do(book.ledger.update_key(key.id, KeyPatch(rate_limit_rpm=None, dlp_policy="redact"), now_ms=T0_MS))
    assert key.limits == KeyLimits(max_spend_usd=D(3), period="month")
    assert key.settings == KeySettings(dlp_policy="redact")
    assert codec.decode(b'{"max_spend_usd": null}', KeyPatch).max_spend_usd is None


def test_settled_ids_are_forgotten_after_the_retention_deterministically() -> None:
    book = Book(settled_retention_s=3600.0)
    book.org(funds="100")
    key, _ = book.key()
    assert book.settle("old", "0.1", now=T0, api_key_id=key.id)
    assert book.settle("new", "0.1", now=T0 + 3601, api_key_id=key.id)
    assert list(book.ledger.state.settled) == ["new"]


def test_bad_admit_inputs_are_refused_not_raised() -> None:
    book = Book()
    book.org()
    key, _ = book.key()
    for reserve, tokens, request_id in ((D(-1), 0, "a"), (D("NaN"), 0, "b"), (D(0), -1, "c"), (D(0), 0, "")):
        refused = book.ledger.admit(key.id, request_id, reserve, tokens, T0)
        assert (refused.admitted, refused.code, refused.status) == (False, "invalid_request", 400)


OFF = KeySettings()


@pytest.mark.parametrize(("key", "org", "effective"), [
    (OFF, OFF, OFF),
    (KeySettings(archive_payloads=True), OFF, KeySettings(archive_payloads=True)),
    (OFF, KeySettings(archive_payloads=True), KeySettings(archive_payloads=True)),
    (OFF, KeySettings(dlp_policy="redact"), KeySettings(dlp_policy="redact")),  # "off" inherits the org's
    (KeySettings(dlp_policy="block"), KeySettings(dlp_policy="redact"), KeySettings(dlp_policy="block")),
    (KeySettings(dlp_policy="block"), OFF, KeySettings(dlp_policy="block")),
    (KeySettings(archive_payloads=True, dlp_policy="off"), KeySettings(archive_payloads=False, dlp_policy="redact"),
     KeySettings(archive_payloads=True, dlp_policy="redact")),
])
def test_effective_settings_archive_if_either_does_and_the_keys_own_policy_wins(
        key: KeySettings, org: KeySettings, effective: KeySettings) -> None:
    assert effective_settings(key, org) == effective


def test_org_settings_reach_admit_and_every_key_of_the_org() -> None:
    book = Book()
    book.org()
    plain, plain_secret = book.key()
    event, _ = book.ledger.create_key("org_a", now_ms=T0_MS, settings=KeySettings(dlp_policy="block"))
    book.do(event)
    strict = book.ledger.existing_key(event.api_key_id)
    assert book.ledger.admit(plain.id, "r0", D(0), 0, T0).settings == OFF

    book.do(book.ledger.update_org("org_a", OrgPatch(archive_payloads=True, dlp_policy="redact"), now_ms=T0_MS))
    assert book.ledger.org("org_a").settings == KeySettings(archive_payloads=True, dlp_policy="redact")
    assert plain.settings == OFF  # the key's own settings are untouched
    admitted = book.ledger.admit(book.ledger.digest(plain_secret), "r1", D(0), 0, T0)
    assert admitted.settings == KeySettings(archive_payloads=True, dlp_policy="redact")
    assert book.ledger.admit(strict.id, "r2", D(0), 0, T0).settings == KeySettings(archive_payloads=True,
                                                                                   dlp_policy="block")
    assert book.ledger.admit(plain.id, "r1", D(0), 0, T0).settings == admitted.settings  # re-admission too

    book.do(book.ledger.update_org("org_a", OrgPatch(archive_payloads=False), now_ms=T0_MS))
    assert book.ledger.settings_for(plain) == KeySettings(dlp_policy="redact")  # an absent field stays
    book.do(book.ledger.update_org("org_a", OrgPatch(dlp_policy="off"), now_ms=T0_MS))
    assert book.ledger.settings_for(plain) is plain.settings


def test_org_settings_are_validated_and_set_at_creation() -> None:
    book = Book()
    created = book.ledger.create_org(now_ms=T0_MS, org_id="org_s", settings=KeySettings(archive_payloads=True))
    book.do(created)
    assert book.ledger.org("org_s").settings == KeySettings(archive_payloads=True)
    with pytest.raises(errors.InvalidRequest) as caught:
        book.ledger.update_org("org_s", OrgPatch(dlp_policy="Redact!"), now_ms=T0_MS)
    assert caught.value.param == "dlp_policy"
    with pytest.raises(errors.InvalidRequest, match="dlp_policy"):
        book.ledger.create_org(now_ms=T0_MS, org_id="org_t", settings=KeySettings(dlp_policy=""))
    with pytest.raises(errors.NotFound, match="org_zz"):
        book.ledger.update_org("org_zz", OrgPatch(archive_payloads=True), now_ms=T0_MS)
    with pytest.raises(msgspec.ValidationError, match="unknown field `name`"):
        codec.decode(b'{"archive_payloads": true, "name": "x"}', OrgPatch)
    assert codec.decode(b'{"dlp_policy": "redact"}', OrgPatch).archive_payloads is msgspec.UNSET


def test_org_settings_survive_replay_and_snapshot_and_old_snapshots_load() -> None:
    book = Book()
    book.org()
    key, secret = book.key()
    book.do(book.ledger.update_org("org_a", OrgPatch(archive_payloads=True, dlp_policy="redact"), now_ms=T0_MS))
    book.do(book.ledger.update_org("org_a", OrgPatch(dlp_policy="redact_restore"), now_ms=T0_MS + 1))
    expected = KeySettings(archive_payloads=True, dlp_policy="redact_restore")

    replayed = Ledger(key_secret=SERVER_SECRET)
    for event in [decode_event(codec.encode(e)) for e in book.events]:
        assert replayed.apply(event)
    assert codec.encode(replayed.state) == codec.encode(book.ledger.state)
    found = replayed.authenticate(secret)
    assert found is not None and replayed.settings_for(found) == expected

    restored = Ledger(key_secret=SERVER_SECRET, state=codec.decode(codec.encode(book.ledger.state), LedgerState))
    assert restored.settings_for(restored.existing_key(key.id)) == expected

    old = (b'{"orgs":{"org_a":{"id":"org_a","name":"A","created_ms":1,"balance_usd":"2"}},"keys":{},'
           b'"applied":{},"settled":{},"events":1}')  # a snapshot written before organizations had settings
    assert codec.decode(old, LedgerState).orgs["org_a"].settings == OFF


def test_org_settings_change_for_a_missing_org_changes_nothing() -> None:
    book = Book()
    book.org()
    change = book.ledger.update_org("org_a", OrgPatch(archive_payloads=True), now_ms=T0_MS)
    fresh = Ledger(key_secret=SERVER_SECRET)
    assert not fresh.apply(change) and fresh.state.events == 0


def test_the_keys_read_model_shows_own_and_effective_settings() -> None:
    book = Book()
    book.org()
    key, _ = book.key()
    book.do(book.ledger.update_org("org_a", OrgPatch(archive_payloads=True), now_ms=T0_MS))
    reply = overview.keys_reply(book.ledger, KeysQuery("org_a"), T0_MS)
    assert reply.organizations[0].settings == KeySettings(archive_payloads=True)
    summary = reply.keys[0]
    assert summary.api_key_id == key.id and summary.settings == OFF
    assert summary.effective_settings == KeySettings(archive_payloads=True)


def test_a_settled_batch_applies_each_member_once_and_replays_exactly() -> None:
    from proto.billing import SettledBatch, event_msg_id, settlements_in

    book = Book()
    book.org(funds="5")
    key, _ = book.key()
    first = book.ledger.settlement("s1", D("0.5"), 10, now_ms=T0_MS, api_key_id=key.id)
    second = book.ledger.settlement("s2", D("0.25"), 5, now_ms=T0_MS, api_key_id=key.id)
    assert first is not None and second is not None
    batch = SettledBatch((first, second))
    book.do(batch)
    assert not book.ledger.apply(SettledBatch((first,)))  # already applied: nothing changes
    assert book.ledger.org("org_a").balance_usd == D("4.25") and key.spent_usd == D("0.75")
    assert settlements_in(batch) == (first, second) and settlements_in(first) == (first,)
    assert event_msg_id(batch) == event_msg_id(SettledBatch((second, first))) != event_msg_id(SettledBatch((first,)))
    replayed = Ledger(key_secret=SERVER_SECRET)
    for event in [decode_event(codec.encode(e)) for e in book.events]:
        replayed.apply(event)
    assert replayed.org("org_a").balance_usd == D("4.25") and replayed.state.events == book.ledger.state.events
