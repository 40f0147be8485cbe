"""Spend leases: billing grants a slice of a key's room, proxies admit from it locally, limits stay exact."""

from __future__ import annotations

import random
from decimal import Decimal

from proto import codec
from proto.billing import LeaseReply, Settled, decode_event
from services.proxy.leases import LeaseBook
from tests.unit.test_billing_ledger import T0, Book

D = Decimal


def test_a_lease_fits_in_a_quarter_of_the_room_and_counts_as_reserved() -> None:
    book = Book()
    book.org(funds="10")
    key, secret = book.key(max_spend_usd=D("2"))
    assert book.ledger.lease(key.id, "lease_0", D("0.51"), D("0.01"), T0).reason == "budget"
    reply = book.ledger.lease(book.ledger.digest(secret), "lease_1", D("0.4"), D("0.01"), T0)
    assert reply.granted and reply.granted_usd == D("0.4") and reply.api_key_id == key.id
    assert book.ledger.reserved_usd(key_id=key.id) == D("0.4")
    assert book.ledger.lease(key.id, "lease_1", D("0.4"), D("0.01"), T0).granted_usd == D("0.4")  # idempotent
    # the next lease sees the room the first one took: 1.6 left, a quarter is 0.4, then 1.2 → 0.3
    assert book.ledger.lease(key.id, "lease_2", D("0.4"), D("0"), T0).granted
    assert book.ledger.lease(key.id, "lease_3", D("0.4"), D("0"), T0).reason == "budget"
    assert book.ledger.reserved_usd(org_id="org_a") == D("0.8")


def test_leases_are_declined_for_rate_limited_revoked_and_exhausted_keys() -> None:
    book = Book()
    book.org(funds="1")
    limited, _ = book.key(rate_limit_rpm=10)
    assert book.ledger.lease(limited.id, "l1", D(1), D(0), T0).reason == "rate_limited"
    tight, _ = book.key(max_spend_usd=D("0.02"))
    assert book.ledger.lease(tight.id, "l2", D("0.01"), D("0.01"), T0).reason == "budget"  # > a quarter of 0.02
    book.do(book.ledger.revoke_key(tight.id, now_ms=int(T0 * 1000)))
    assert book.ledger.lease(tight.id, "l3", D(1), D(0), T0).reason == "key"
    assert book.ledger.lease("key_missing", "l4", D(1), D(0), T0).reason == "key"
    free, _ = book.key()
    assert book.ledger.lease(free.id, "l5", D("-1"), D(0), T0).reason == "invalid"
    assert Book(lease_s=0.0).ledger.lease_s == 0.0


def test_settlements_draw_from_the_lease_and_release_frees_the_rest() -> None:
    book = Book()
    book.org(funds="10")
    key, _ = book.key()
    assert book.ledger.lease(key.id, "lease_1", D("1"), D(0), T0).granted  # a quarter of 10 is 2.5
    assert book.settle("r1", "0.3", lease_id="lease_1", api_key_id=key.id)
    assert book.settle("r2", "0.2", lease_id="lease_1", api_key_id=key.id)
    assert book.ledger.reserved_usd(org_id="org_a") == D("0.5")
    assert book.ledger.org("org_a").balance_usd == D("9.5")
    assert book.ledger.release_lease("lease_1") and not book.ledger.release_lease("lease_1")
    assert book.ledger.reserved_usd(org_id="org_a") == 0 and book.ledger.reserved_usd(key_id=key.id) == 0
    assert book.settle("r3", "0.1", lease_id="lease_1", api_key_id=key.id)  # late: the spend is recorded all the same
    assert book.ledger.org("org_a").balance_usd == D("9.4") and book.ledger.reserved_usd(org_id="org_a") == 0


def test_a_settled_event_with_a_lease_replays_and_old_events_still_decode() -> None:
    event = Settled(request_id="r", api_key_id="k", organization_id="o", cost_usd=D("0.1"), total_tokens=3,
                    ts_ms=1, lease_id="lease_1")
    assert decode_event(codec.encode(event)) == event
    old = b'{"type":"settled","request_id":"r","api_key_id":"k","organization_id":"o","cost_usd":"0.1",' \
          b'"total_tokens":3,"ts_ms":1}'
    assert decode_event(old).lease_id is None  # type: ignore[union-attr]


def test_proxies_admitting_from_leases_never_exceed_max_spend_or_the_wallet() -> None:
    """Two simulated proxies (a LeaseBook each, on a shared fake clock) admit from leases or per request,
    settle at random costs ≤ the worst case, renew and release; billing's invariants hold at every step."""
    rng = random.Random(11)  # noqa: S311 (a seeded, reproducible schedule)
    for _ in range(15):
        clock = [T0]
        book = Book(reservation_ttl_s=30.0, lease_s=1.0)
        book.org(funds=str(rng.choice([1, 5, 50])))
        key, secret = book.key(max_spend_usd=D(rng.choice(["0.8", "3", "20"])))
        ledger, digest = book.ledger, book.ledger.digest(secret)
        proxies = [LeaseBook(clock=lambda clock=clock: clock[0]) for _ in range(2)]  # type: ignore[misc]
        open_requests: list[tuple[int, str, Decimal]] = []
        spent = D(0)
        for step in range(800):
            clock[0] += rng.random() * 0.02
            proxy_index = rng.randrange(2)
            proxy = proxies[proxy_index]
            if rng.random() < 0.55:
                worst = D(rng.randint(1, 20)) / 1000
                request_id = f"r{step}"
                wanted = proxy.wanted(secret, worst)
                if wanted is not None:
                    lease_id = f"lease_{step}"
                    reply = ledger.lease(digest, lease_id, wanted[0], wanted[1], clock[0])
                    if reply.granted:
                        proxy.granted(secret, lease_id, reply)
                    else:
                        proxy.declined(secret, reply.reason)
                if proxy.take(secret, request_id, worst) is not None or \
                        ledger.admit(digest, request_id, worst, 0, clock[0]).admitted:
                    open_requests.append((proxy_index, request_id, worst))
            elif open_requests:
                proxy_index, request_id, worst = open_requests.pop(rng.randrange(len(open_requests)))
                cost = worst * D(rng.randint(0, 100)) / 100
                lease_id = proxies[proxy_index].finish(request_id, cost)
                assert book.settle(request_id, str(cost), now=clock[0], lease_id=lease_id,  # type: ignore[arg-type]
                                   api_key_id=key.id)
                spent += cost
                if lease_id is not None:
                    proxies[proxy_index].settled(lease_id)
                for lease in proxies[proxy_index].releasable():
                    assert ledger.release_lease(lease.id)
            assert key.spent_usd + ledger.reserved_usd(key_id=key.id) <= key.limits.max_spend_usd
            assert ledger.org("org_a").balance_usd - ledger.reserved_usd(org_id="org_a") >= 0
        assert key.spent_usd == spent


def test_the_proxy_book_takes_worst_cases_gives_back_the_unspent_and_renews_ahead() -> None:
    clock = [100.0]
    book = LeaseBook(clock=lambda: clock[0])
    assert book.wanted("rk", D("0.01")) == (D("0.64"), D("0.01"))
    assert book.wanted("rk", D("0.01")) is None  # already asking
    lease = book.granted("rk", "lease_a", LeaseReply(granted=True, granted_usd=D("0.1"), ttl_s=1.0))
    assert book.take("rk", "r1", D("0.06")) is lease and book.take("rk", "r2", D("0.06")) is None
    assert book.finish("r1", D("0.01")) == "lease_a" and lease.remaining == D("0.09")
    assert book.finish("r-unknown", D(1)) is None
    assert book.releasable() == []  # still usable, and r1's settlement is unconfirmed
    clock[0] += 0.6  # past half its time: ask for the next one, sized on what this one admitted
    assert book.wanted("rk", D("0.01")) == (D("0.64"), D("0.01"))
    book.granted("rk", "lease_b", LeaseReply(granted=True, granted_usd=D("1"), ttl_s=1.0))
    assert book.take("rk", "r3", D("0.5")) is not None and lease.retired
    assert book.releasable() == []
    book.settled("lease_a")
    assert book.releasable() == [lease] and book.releasable() == []
    book.declined("rk2", "rate_limited")
    clock[0] += 5
    assert book.wanted("rk2", D("0.01")) is None
    clock[0] += 6
    assert book.wanted("rk2", D("0.01")) is not None
