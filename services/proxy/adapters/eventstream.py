"""AWS event-stream binary framing (`application/vnd.amazon.eventstream`): the incremental decoder of ConverseStream.

Why not botocore's `botocore.eventstream.EventStreamBuffer` (botocore is a dependency already): on the streaming
hot path this decoder is several times faster. Decoding one realistic 200-event ConverseStream (41 kB, three
string headers per frame; best of 5x50 runs, Python 3.11, on a shared 2-core box, so read the ratios):

    delivery                      this decoder    EventStreamBuffer
    one frame per read            0.5-1.0 ms      2.6-5.4 ms
    1400-byte reads               0.4-1.6 ms      2.8-5.5 ms
    the whole stream in one read  0.4-1.0 ms      2.9-4.8 ms

(before the header cache below this decoder took 1.7-1.9 ms, botocore's 2.6-4.7 ms). Most of the time is
parsing headers, and a stream repeats a handful of header sections (one per event type), so each decoder keeps
the sections it has parsed. tests/unit/test_adapter_eventstream.py checks that this decoder returns exactly
what EventStreamBuffer returns for the same bytes, split anywhere.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

PRELUDE_LENGTH = 12
"""total length (uint32) + headers length (uint32) + prelude CRC32 (uint32), all big-endian."""
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + 4
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
"""The limits botocore enforces; a longer frame means a corrupt or hostile stream, not a big answer."""

HeaderValue = bool | int | bytes | str
"""Booleans; bytes, shorts, ints, longs and timestamps (ms) as int; byte arrays and uuids as bytes; strings."""
Message = tuple[dict[str, HeaderValue], bytes]
"""One decoded message: its headers and its payload."""

_KNOWN_HEADER_SECTIONS = 64


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (bad checksum, impossible length, unknown header type)."""


def _fixed(fmt: str) -> Callable[[bytes, int], tuple[HeaderValue, int]]:
    size = struct.calcsize(fmt)

    def read(data: bytes, at: int) -> tuple[HeaderValue, int]:
        return struct.unpack_from(fmt, data, at)[0], at + size

    return read


def _sized(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from("!H", data, at)
    end = at + 2 + length
    if end > len(data):
        raise EventStreamError("header value runs past the end of the headers section")
    return data[at + 2 : end], end


def _bytes(data: bytes, at: int) -> tuple[HeaderValue, int]:
    return _sized(data, at)


def _string(data: bytes, at: int) -> tuple[HeaderValue, int]:
    raw, end = _sized(data, at)
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        raise EventStreamError("string header value is not valid UTF-8") from None


def _uuid(data: bytes, at: int) -> tuple[HeaderValue, int]:
    if at + 16 > len(data):
        raise EventStreamError("uuid header value runs past the end of the headers section")
    return data[at : at + 16], at + 16


_READERS: dict[int, Callable[[bytes, int], tuple[HeaderValue, int]]] = {
    0: lambda data, at: (True, at),
    1: lambda data, at: (False, at),
    2: _fixed("!b"),
    3: _fixed("!h"),
    4: _fixed("!i"),
    5: _fixed("!q"),
    6: _bytes,
    7: _string,
    8: _fixed("!q"),  # timestamp: milliseconds since the epoch
    9: _uuid,
}
"""Header value types 0-9 of the format; every width is known so an unread type cannot desynchronise the rest."""


def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    """The headers section of one message as a dict; raises EventStreamError when it is malformed."""
    headers: dict[str, HeaderValue] = {}
    at = 0
    try:
        while at < len(data):
            name_length = data[at]
            name = data[at + 1 : at + 1 + name_length].decode("utf-8")
            at += 1 + name_length
            kind = data[at]
            reader = _READERS.get(kind)
            if reader is None:
                raise EventStreamError(f"header {name!r} has unknown value type {kind}")
            if name in headers:
                raise EventStreamError(f"header {name!r} appears twice")
            headers[name], at = reader(data, at + 1)
    except (IndexError, struct.error, UnicodeDecodeError):
        raise EventStreamError("headers section is truncated or malformed") from None
    return headers


class EventStreamDecoder:
    """Feed bytes as they arrive; get back every complete message, both CRCs verified."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._known: dict[bytes, dict[str, HeaderValue]] = {}

    def _headers(self, raw: bytes) -> dict[str, HeaderValue]:
        """Decoded headers, remembered by their bytes: a stream repeats a few header sections (one per
        event type), and parsing them is most of the decoding time."""
        known = self._known.get(raw)
        if known is None:
            known = decode_headers(raw)
            if len(self._known) < _KNOWN_HEADER_SECTIONS:
                self._known[raw] = known
        return dict(known)

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make up a whole message (non-zero at the end = a cut stream)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Add `data` and return the messages it completed; raises EventStreamError on corruption."""
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, headers_length, prelude_crc = struct.unpack_from("!III", self._buffer)
            computed = zlib.crc32(self._buffer[:8])
            if computed != prelude_crc:
                raise EventStreamError(f"prelude checksum mismatch: expected 0x{prelude_crc:08x}, "
                                       f"computed 0x{computed:08x}")
            payload_length = total - headers_length - MIN_MESSAGE_LENGTH
            if headers_length > MAX_HEADERS_LENGTH or not 0 <= payload_length <= MAX_PAYLOAD_LENGTH:
                raise EventStreamError(f"impossible message lengths: total {total}, headers {headers_length}")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from("!I", frame, total - 4)
            computed = zlib.crc32(frame[: total - 4])
            if computed != message_crc:
                raise EventStreamError(f"message checksum mismatch: expected 0x{message_crc:08x}, "
                                       f"computed 0x{computed:08x}")
            headers_end = PRELUDE_LENGTH + headers_length
            messages.append((self._headers(frame[PRELUDE_LENGTH:headers_end]), frame[headers_end : total - 4]))
        return messages
