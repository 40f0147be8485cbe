"""AWS event-stream framing written by the emulator's ConverseStream: string headers, payload, both CRC32s.

Independent of the proxy's decoder on purpose; tests check these frames against botocore's EventStreamBuffer.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

PRELUDE_LENGTH = 12
"""total length (uint32) + headers length (uint32) + prelude CRC32 (uint32), all big-endian."""
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + 4
_STRING = 7
"""Header value type 7: a utf-8 string with a uint16 length."""


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
