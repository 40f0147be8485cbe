"""A raw-socket HTTP/1.1 client for tests: sends exactly the bytes it is given (CR/LF or NUL in a header, any
byte in the path or body), one request per connection, and reads the whole reply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int  # 0 when the server closed the connection without a status line
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def request_bytes(method: str, target: str | bytes, *, headers: Sequence[tuple[bytes, bytes]] = (),
                  body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    """One HTTP/1.1 request, byte for byte: `Connection: close`, Content-Length when there is a body."""
    path = target if isinstance(target, bytes) else target.encode()
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: " + host.encode(), b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_reply(data: bytes) -> Reply:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Reply(0, {}, data)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    elif "content-length" in headers and headers["content-length"].isdigit():
        rest = rest[: int(headers["content-length"])]
    return Reply(int(parts[1]), headers, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


async def send(port: int, raw: bytes, *, timeout: float = 60.0) -> Reply:
    """Send `raw` on a fresh loopback connection and read the whole reply (the server closes it)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        try:
            writer.write(raw)
            await writer.drain()
        except ConnectionError:  # the server answered (e.g. 401, 413) and closed before reading everything
            pass
        chunks = []
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), timeout):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return parse_reply(b"".join(chunks))
    finally:
        writer.close()
