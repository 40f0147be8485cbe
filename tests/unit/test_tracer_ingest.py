"""The tracer's pure ingest core: sorting a batch of deliveries, replay detection, insert health; how an insert
failure is described in logs; and yesterday's replies decoding with today's schema."""

from __future__ import annotations

from clickhouse_connect.driver.exceptions import DatabaseError

from proto import codec
from proto.trace import REPLY_BAD_QUERY, REPLY_FAILED, LogsReply, TraceEvent, TraceReply, UsageReply
from services.tracer.ingest import Cursor, InsertHealth, delivery
from services.tracer.store import error_detail

EVENT = TraceEvent(request_id="req_1", timestamp_ms=1_763_900_040_000, organization_id="org_a", api_key_id="k",
                   endpoint="/v1/chat/completions", requested_model="m", model="m", provider="p",
                   upstream_model="m", route_reason="default", status_code=200, stream=False, latency_ms=1.0,
                   upstream_latency_ms=1.0)


def _ack(delivered: int, seq: int, pending: int) -> str:
    return f"$JS.ACK.TRACES.tracer.{delivered}.{seq}.{seq}.1763900040000000000.{pending}"


def _data(request_id: str) -> bytes:
    return codec.encode(TraceEvent(**{**codec.to_builtins(EVENT), "request_id": request_id}))


def test_a_batch_keeps_decodable_events_in_order_and_names_the_undecodable_ones() -> None:
    batch = Cursor().sort([(_data("a"), _ack(1, 1, 2)), (b"{not json", _ack(1, 2, 1)),
                           (b'{"request_id": 5}', _ack(1, 3, 0)), (_data("b"), _ack(1, 4, 0))])
    assert [e.request_id for e in batch.events] == ["a", "b"]
    assert (batch.good, batch.bad, batch.top_seq, batch.pending, batch.redelivered) == ([0, 3], [1, 2], 4, 0, False)


def test_a_redelivery_or_a_first_delivery_at_or_below_the_stored_sequence_is_a_replay() -> None:
    cursor = Cursor()
    first = cursor.sort([(_data("a"), _ack(1, 10, 5))])
    assert not first.redelivered
    cursor.stored(first)
    assert cursor.stored_seq == 10
    assert cursor.sort([(_data("b"), _ack(2, 11, 0))]).redelivered  # delivered twice
    assert cursor.sort([(_data("c"), _ack(1, 10, 0))]).redelivered  # the server lost its acks: seq 10 again
    assert not cursor.sort([(_data("d"), _ack(1, 11, 0))]).redelivered
    assert cursor.sort([(_data("e"), "not-an-ack-subject")]).redelivered  # not JetStream: the careful path
    assert delivery("nonsense") == (2, 0, 0)


def test_a_new_consumer_replays_until_it_has_nothing_pending() -> None:
    cursor = Cursor()
    cursor.stored(cursor.sort([(_data("a"), _ack(1, 50, 0))]))
    cursor.consumer_created()
    assert (cursor.replaying, cursor.stored_seq) == (True, 0)
    behind = cursor.sort([(_data("a"), _ack(1, 1, 3))])
    assert behind.redelivered
    cursor.stored(behind)
    assert cursor.replaying  # three more to come
    caught_up = cursor.sort([(_data("b"), _ack(1, 4, 0))])
    assert caught_up.redelivered
    cursor.stored(caught_up)
    assert not cursor.replaying and not cursor.sort([(_data("c"), _ack(1, 5, 0))]).redelivered


def test_inserts_are_unhealthy_after_failures_in_a_row_or_failing_long_and_healthy_after_one_success() -> None:
    health = InsertHealth(max_failures=3, max_failing_s=10.0)
    assert health.healthy(0.0) and health.failing_for_s(0.0) == 0.0
    health.failed(100.0, "DatabaseError 164 (READONLY)")
    health.failed(102.0, "DatabaseError 164 (READONLY)")
    assert health.healthy(102.0) and health.failing_for_s(102.0) == 2.0
    health.failed(104.0, "DatabaseError 164 (READONLY)")
    assert not health.healthy(104.0) and health.last_error == "DatabaseError 164 (READONLY)"
    health.succeeded()
    assert health.healthy(104.0) and health.failures == 0 and health.last_error is None
    health.failed(200.0, "OperationalError")  # one slow failure: unhealthy once it has lasted 10 s
    assert health.healthy(209.9) and not health.healthy(210.0)


def test_yesterdays_replies_without_a_code_decode_with_todays_schema() -> None:
    # what a tracer sent before `code` existed
    assert codec.decode(b'{"trace": null, "error": "trace store unavailable: OperationalError"}',
                        TraceReply) == TraceReply(error="trace store unavailable: OperationalError", code=REPLY_FAILED)
    logs = codec.decode(b'{"traces": [], "next_cursor": null, "error": "bad query: x"}', LogsReply)
    assert logs.error == "bad query: x" and logs.code == REPLY_FAILED
    usage = codec.decode(b'{"rows": [], "totals": null, "since_ms": 1, "until_ms": 2, "error": null}', UsageReply)
    assert usage.error is None and (usage.since_ms, usage.until_ms) == (1, 2)
    for reply in (TraceReply(error="e", code=REPLY_BAD_QUERY), LogsReply(error="e", code=REPLY_BAD_QUERY),
                  UsageReply(error="e", code=REPLY_BAD_QUERY)):
        assert codec.decode(codec.encode(reply), type(reply)) == reply


def test_a_failure_is_described_by_its_engine_code_name_and_message_with_quoted_values_blanked() -> None:
    exc = DatabaseError("Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)\n"
                        "stack trace…", code=164, name="READONLY")
    assert error_detail(exc) == {
        "error": "DatabaseError", "code": 164, "name": "READONLY",
        "message": "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)"}
    leaky = DatabaseError("Code: 27. Cannot parse input: expected 'x' before: 'sk-secret\\'s prompt': (at row 1)",
                          code=27, name="CANNOT_PARSE_INPUT_ASSERTION_FAILED")
    message = error_detail(leaky)["message"]
    assert "secret" not in message and "prompt" not in message and message.startswith("Code: 27.")
    assert error_detail(ConnectionRefusedError()) == {"error": "ConnectionRefusedError", "code": None, "name": None,
                                                      "message": ""}
