"""A tiny static OpenAI-format upstream on raw asyncio (uvloop): a fixed chat.completion or SSE stream per request."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import msgspec

from services.emulator import openai_format as oa

PROFILE_PATH = b"/_static/profile"
_ENCODER = msgspec.json.Encoder()
_REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello, how are you today?"}]}


class Profile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Delays with the emulator's fault-plan meaning: `latency_ms` before any answer, `ttft_ms` before the
    body (or first chunk), `chunk_interval_ms` before each later chunk."""

    latency_ms: int = 0
    ttft_ms: int = 0
    chunk_interval_ms: int = 0

    @property
    def instant(self) -> bool:
        return not (self.latency_ms or self.ttft_ms or self.chunk_interval_ms)


class _Stream(msgspec.Struct):
    stream: bool = False


_STREAM_DECODER = msgspec.json.Decoder(_Stream)


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nx-request-id: req_static\r\nopenai-processing-ms: 0\r\n\r\n" + body)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Answers:
    """The fixed bytes served: built once from the emulator's own wire-format code (same shapes and sizes)."""

    def __init__(self) -> None:
        reply = oa.plan_reply(_REQUEST)
        completion_id = "chatcmpl-static0000000000000000000"
        self.completion = _response("200 OK", b"application/json", _ENCODER.encode(
            oa.completion_body(reply, completion_id=completion_id, created=1767225600)))
        self.events = [b"data: " + _ENCODER.encode(chunk) + b"\n\n" for chunk in oa.stream_chunks(
            reply, completion_id=completion_id, created=1767225600, include_usage=True)]
        self.events.append(b"data: [DONE]\n\n")
        self.stream_head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                            b"x-request-id: req_static\r\n\r\n")
        self.stream_end = b"0\r\n\r\n"
        self.stream = self.stream_head + b"".join(_chunk(e) for e in self.events) + self.stream_end
        self.not_found = _response("404 Not Found", b"application/json",
                                   _ENCODER.encode(oa.not_found_body("POST", "unknown")))
        self.ok = _response("200 OK", b"application/json", b'{"ready":true}')
        self.bad = _response("400 Bad Request", b"application/json", b'{"error":{"message":"bad request"}}')


class Server:
    """State shared by every connection: the answers and the current delay profile."""

    def __init__(self) -> None:
        self.answers = Answers()
        self.profile = Profile()
        self.requests = 0


class Connection(asyncio.Protocol):
    """HTTP/1.1 keep-alive framing by Content-Length; one request at a time per connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        transport = self.transport
        assert transport is not None
        buffer = self.buffer
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buffer[:head_end]).lower()
            length = 0
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                line_end = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17:line_end if line_end >= 0 else None].strip())
            elif b"\r\ntransfer-encoding:" in head:
                transport.write(self.server.answers.bad)
                transport.close()
                return
            total = head_end + 4 + length
            if len(buffer) < total:
                return
            body = bytes(buffer[head_end + 4:total])
            del buffer[:total]
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0]
            if not self.answer(transport, method, path, body):
                return

    def answer(self, transport: asyncio.Transport, method: bytes, path: bytes, body: bytes) -> bool:
        """Write the answer; False when it is sent later (a delay profile is set) and parsing must pause."""
        answers = self.server.answers
        if method == b"post" and path.endswith(b"/chat/completions"):
            self.server.requests += 1
            try:
                stream = _STREAM_DECODER.decode(body).stream
            except msgspec.DecodeError:
                transport.write(answers.bad)
                return True
            profile = self.server.profile
            if profile.instant:
                transport.write(answers.stream if stream else answers.completion)
                return True
            self.busy = True
            asyncio.get_running_loop().create_task(self.delayed(transport, profile, stream))
            return False
        if path == PROFILE_PATH and method in (b"put", b"post"):
            try:
                self.server.profile = msgspec.json.decode(body or b"{}", type=Profile)
            except (msgspec.DecodeError, msgspec.ValidationError):
                transport.write(answers.bad)
                return True
            transport.write(_response("200 OK", b"application/json", _ENCODER.encode(self.server.profile)))
            return True
        if path in (b"/healthz", b"/readyz"):
            transport.write(answers.ok)
            return True
        transport.write(answers.not_found)
        return True

    async def delayed(self, transport: asyncio.Transport, profile: Profile, stream: bool) -> None:
        answers = self.server.answers
        await _sleep_ms(profile.latency_ms)
        if not stream:
            await _sleep_ms(profile.ttft_ms)
            if not transport.is_closing():
                transport.write(answers.completion)
        else:
            transport.write(answers.stream_head)
            for index, event in enumerate(answers.events[:-1]):
                await _sleep_ms(profile.ttft_ms if index == 0 else profile.chunk_interval_ms)
                if transport.is_closing():
                    return
                transport.write(_chunk(event))
            transport.write(_chunk(answers.events[-1]) + answers.stream_end)
        self.busy = False
        if self.buffer and not transport.is_closing():
            self.process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _sleep_ms(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


async def serve(host: str, port: int) -> None:
    server = Server()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), host, port, reuse_address=True, backlog=4096)
    bound = listener.sockets[0].getsockname()[1]
    print(f"STATIC_UPSTREAM_PORT={bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.static_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
