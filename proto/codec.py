"""One encoder and cached decoders for every bus message (msgspec JSON, Decimals as numbers)."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="number")


def encode(message: Any) -> bytes:
    """Encode any proto Struct (or plain JSON value) to bytes."""
    return _encoder.encode(message)


@cache
def _decoder(kind: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


def decode(data: bytes, kind: type[T]) -> T:
    """Decode bytes into `kind`; raises msgspec.ValidationError / DecodeError on bad input."""
    return _decoder(kind).decode(data)  # type: ignore[arg-type,no-any-return]


def to_builtins(message: Any) -> Any:
    """A JSON-ready dict for HTTP responses (Decimals as strings are avoided: numbers via encode)."""
    return msgspec.json.decode(_encoder.encode(message))
