"""AWS event-stream framing: the proxy's decoder returns exactly what botocore's EventStreamBuffer returns for the
same bytes, and botocore reads the emulator's frames as written."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from services.emulator import bedrock_format as bf
from services.emulator.eventstream import encode_message
from services.proxy.adapters.eventstream import EventStreamDecoder, EventStreamError

# Event-stream test vectors of the AWS SDKs' suites (botocore, amazon-transcribe): recorded bytes and their headers.
VECTORS: list[tuple[bytes, dict[str, Any], bytes]] = [
    (b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff", {}, b""),
    (b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96", {}, b"{'foo':'bar'}"),
    (b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\x8d\x9c"
     b"\x08\xb1", {"content-type": "application/json"}, b"{'foo':'bar'}"),
    (b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03\x014\x04"
     b"\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8\x018\x08"
     b"\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef\x63\x35\x36\x71",
     {"0": True, "1": False, "2": 2, "3": 3, "4": 4, "5": 5, "6": b"bytes", "7": "utf8", "8": 8,
      "9": b"0123456789abcdef"}, b""),
    (b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e\x0d:message-type\x07\x00\x05error\x0b:error-code\x07\x00"
     b"\x04code\x0e:error-message\x07\x00\x07message\x6b\x6c\xea\x3d",
     {":message-type": "error", ":error-code": "code", ":error-message": "message"}, b""),
]
BEDROCK_MESSAGE_START_PRELUDE = b"\x00\x00\x00\x95\x00\x00\x00R\xf9\xa1G\xd1"
"""The first 12 bytes of a messageStart frame recorded from ConverseStream: 149 bytes in all, 82 of headers."""

@pytest.mark.parametrize(("raw", "headers", "payload"), VECTORS)
def test_recorded_vectors_decode_as_botocore_decodes_them(raw: bytes, headers: dict[str, Any], payload: bytes) -> None:
    assert EventStreamDecoder().feed(raw) == [(headers, payload)]
    reference = EventStreamBuffer()
    reference.add_data(raw)
    assert [(m.headers, m.payload) for m in reference] == [(headers, payload)]


def test_messages_split_anywhere_decode_incrementally() -> None:
    stream = b"".join(raw for raw, _, _ in VECTORS)
    decoder = EventStreamDecoder()
    got = [message for i in range(0, len(stream), 7) for message in decoder.feed(stream[i : i + 7])]
    assert got == [(h, p) for _, h, p in VECTORS] and decoder.pending == 0


def test_encoder_round_trips_and_botocore_reads_it() -> None:
    payload = b'{"p":"abcdefghijklmnopqrstuvwx","role":"assistant"}'
    raw = encode_message({":event-type": "messageStart", ":content-type": "application/json",
                          ":message-type": "event"}, payload)
    assert raw[:12] == BEDROCK_MESSAGE_START_PRELUDE
    reference = EventStreamBuffer()
    reference.add_data(raw)
    (message,) = list(reference)
    assert message.headers == {":event-type": "messageStart", ":content-type": "application/json",
                               ":message-type": "event"}
    assert EventStreamDecoder().feed(raw) == [(message.headers, payload)]


@pytest.mark.parametrize(("index", "match"), [(5, "prelude checksum"), (20, "message checksum"), (-2, "message check")])
def test_a_flipped_bit_is_detected(index: int, match: str) -> None:
    raw = bytearray(VECTORS[2][0])
    raw[index] ^= 0x01
    with pytest.raises(EventStreamError, match=match):
        EventStreamDecoder().feed(bytes(raw))


def test_impossible_lengths_are_refused_before_waiting_for_bytes() -> None:
    prelude = b"\x10\x00\x00\x1d\x00\x00\x00\x00"  # 256 MiB: more than any frame may be
    with pytest.raises(EventStreamError, match="impossible message lengths"):
        EventStreamDecoder().feed(prelude + zlib.crc32(prelude).to_bytes(4, "big"))


def converse_stream(events: int = 200) -> list[bytes]:
    """A ConverseStream of `events` frames as the emulator sends it: messageStart, text deltas, stop, metadata."""
    words = [f"word{i}" for i in range(3 * events)]
    payloads: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    payloads += [("contentBlockDelta", {"delta": {"text": " ".join(words[3 * i : 3 * i + 3]) + " "},
                                        "contentBlockIndex": 0}) for i in range(events - 4)]
    payloads += [("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": "end_turn"}),
                 ("metadata", {"usage": {"inputTokens": 25, "outputTokens": 600, "totalTokens": 625},
                               "metrics": {"latencyMs": 812}})]
    return [bf.encode_event(name, data, i) for i, (name, data) in enumerate(payloads)]


def botocore_reads(chunks: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    reference = EventStreamBuffer()
    out = []
    for chunk in chunks:
        reference.add_data(chunk)
        out += [(message.headers, message.payload) for message in reference]
    return out


def we_read(chunks: list[bytes]) -> list[tuple[dict[str, Any], bytes]]:
    decoder = EventStreamDecoder()
    out = [message for chunk in chunks for message in decoder.feed(chunk)]
    assert decoder.pending == 0
    return out


@pytest.mark.parametrize("size", [0, 1, 7, 149, 1400, 1 << 20], ids=lambda size: f"reads of {size or 'one frame'}")
def test_a_200_event_converse_stream_decodes_exactly_as_botocore_decodes_it(size: int) -> None:
    frames = converse_stream(200)
    stream = b"".join(frames)
    chunks = frames if size == 0 else [stream[i : i + size] for i in range(0, len(stream), size)]
    ours = we_read(chunks)
    assert len(ours) == 200
    assert ours == botocore_reads(chunks)
    assert [payload for _, payload in ours] == [frame[frame.index(b"{"):-4] for frame in frames]


def test_the_vectors_and_a_stream_mixed_decode_as_botocore_decodes_them() -> None:
    stream = b"".join([*converse_stream(10), *(raw for raw, _, _ in VECTORS), *converse_stream(10)])
    chunks = [stream[i : i + 5] for i in range(0, len(stream), 5)]
    assert we_read(chunks) == botocore_reads(chunks)


def test_remembered_headers_are_handed_out_as_copies() -> None:
    decoder = EventStreamDecoder()
    frame = bf.encode_event("contentBlockDelta", {"delta": {"text": "a"}, "contentBlockIndex": 0})
    (first_headers, _), (second_headers, _) = decoder.feed(frame + frame)
    first_headers[":event-type"] = "changed"
    ((third_headers, _),) = decoder.feed(frame)
    assert second_headers[":event-type"] == third_headers[":event-type"] == "contentBlockDelta"


def test_the_emulator_stream_is_read_by_botocore_as_written() -> None:
    frames = converse_stream(20)
    messages = botocore_reads([b"".join(frames)])
    assert [headers[":event-type"] for headers, _ in messages] == [
        "messageStart", *["contentBlockDelta"] * 16, "contentBlockStop", "messageStop", "metadata"]
    assert all(headers[":message-type"] == "event" and headers[":content-type"] == "application/json"
               for headers, _ in messages)
    exception = bf.encode_exception("throttlingException", "Too many tokens")
    ((headers, payload),) = botocore_reads([exception])
    assert headers == {":exception-type": "throttlingException", ":content-type": "application/json",
                       ":message-type": "exception"} and payload == b'{"message":"Too many tokens"}'
