"""AWS event-stream binary framing (`application/vnd.amazon.eventstream`): an incremental decoder and an encoder."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping

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

_STRING = 7


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
            messages.append((decode_headers(frame[PRELUDE_LENGTH:headers_end]), frame[headers_end : total - 4]))
        return messages


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """String headers (value type 7) in the order given."""
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 0xFFFF:
            raise ValueError(f"header {name!r} is too long for the event-stream format")
        out += struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude, prelude CRC, string headers, payload, message CRC."""
    encoded = encode_headers(headers)
    total = MIN_MESSAGE_LENGTH + len(encoded) + len(payload)
    prelude = struct.pack("!II", total, len(encoded))
    body = prelude + struct.pack("!I", zlib.crc32(prelude)) + encoded + payload
    return body + struct.pack("!I", zlib.crc32(body))
