"""Payload capture: the four layers of one request, assembled only for keys that archive payloads, and
published to JetStream off the response path, sealed to the archiver's X25519 public key: JetStream holds
ciphertext only, and the archiver opens the box and stores its own envelope.

Nothing here waits for S3, and a request never fails because archiving is slow or down: JetStream absorbs
a slow archiver, and while NATS itself is unreachable archives wait in a memory buffer bounded in bytes
(`PROXY_PAYLOAD_BUFFER_BYTES`); beyond it an archive is dropped and counted, never a request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from nats.js import JetStreamContext
from prometheus_client import Counter

from proto import codec, subjects
from proto.payload import PayloadArchive, archive_aad
from proto.trace import TraceEvent
from services.common import sealing
from services.common.logs import get_logger
from services.common.retry_queue import RetryQueue
from services.common.sealing import PublicSealKey

log = get_logger()
INLINE_SEAL_BYTES = 64 * 1024  # larger archives are sealed in a worker thread


@dataclass
class Capture:
    """The layers of one request as they become known. `upstream_chunks` collects a stream's raw bytes;
    `caller_chunks` what was written to the caller, after any translation."""

    caller_request: bytes
    upstream_request: bytes = b""
    upstream_response: bytes = b""
    upstream_chunks: list[bytes] = field(default_factory=list)
    caller_chunks: list[bytes] = field(default_factory=list)

    def archive(self, trace: TraceEvent, response: web.StreamResponse, *, max_bytes: int) -> PayloadArchive:
        """The archive once the caller's response is final (a plain body, or the chunks written)."""
        if isinstance(response, web.Response) and not response.prepared:
            body = response.body
            caller_response = bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else b""
        else:
            caller_response = b"".join(self.caller_chunks)
        upstream_response = self.upstream_response or b"".join(self.upstream_chunks)
        layers = fit((self.caller_request, self.upstream_request, upstream_response, caller_response), max_bytes)
        return PayloadArchive(
            request_id=trace.request_id, organization_id=trace.organization_id, timestamp_ms=trace.timestamp_ms,
            caller_request=layers[0], upstream_request=layers[1], upstream_response=layers[2],
            caller_response=layers[3], api_key_id=trace.api_key_id, endpoint=trace.endpoint, stream=trace.stream,
            status_code=response.status, redactions=trace.redactions,
            truncated=sum(map(len, layers)) < len(self.caller_request) + len(self.upstream_request)
            + len(upstream_response) + len(caller_response))


def fit(layers: tuple[bytes, ...], max_bytes: int) -> tuple[bytes, ...]:
    """Cut the largest layers first until all of them fit in `max_bytes` (a bus message has a size limit);
    small layers are never cut to make room for a large one."""
    total = sum(map(len, layers))
    if total <= max_bytes:
        return layers
    budget = max_bytes
    sizes = [0] * len(layers)
    for position, index in enumerate(sorted(range(len(layers)), key=lambda i: len(layers[i]))):
        share = budget // (len(layers) - position)
        sizes[index] = min(len(layers[index]), share)
        budget -= sizes[index]
    return tuple(layer[:size] for layer, size in zip(layers, sizes, strict=True))


def seal_archive(archive: PayloadArchive, recipient: PublicSealKey, encoded: bytes | None = None) -> bytes:
    """The bus message for `archive` (`encoded`: its codec encoding, when already made): ids and time in
    clear, everything else in a box only `recipient` opens (a fresh ephemeral key each time; the request id
    and organization are its associated data)."""
    plaintext = codec.encode(archive) if encoded is None else encoded
    box = sealing.seal(plaintext, archive_aad(archive.request_id, archive.organization_id), recipient)
    return codec.encode(PayloadArchive(
        request_id=archive.request_id, organization_id=archive.organization_id, timestamp_ms=archive.timestamp_ms,
        caller_request=b"", upstream_request=b"", upstream_response=b"", caller_response=b"", sealed=box))


class PayloadPublisher:
    """Publishes sealed archives with Nats-Msg-Id = request_id (a retried publish is stored once), retrying
    until JetStream acks; at most `buffer_bytes` of archives wait in memory (in this process only). Without
    the archiver's public key nothing is published: an archive is dropped and counted rather than put on the
    bus in clear."""

    def __init__(self, js: JetStreamContext, *, buffer_bytes: int, dropped: Counter,
                 seal_to: PublicSealKey | None) -> None:
        self._js = js
        self._seal_to = seal_to
        self._queue: RetryQueue[tuple[PayloadArchive, bytes]] = RetryQueue(self._publish, name="payload-publisher",
                                                                          batch=32)
        self._limit = buffer_bytes
        self._dropped = dropped
        self.buffered_bytes = 0

    @property
    def backlog(self) -> int:
        return self._queue.backlog

    def start(self) -> None:
        self._queue.start()

    def submit(self, archive: PayloadArchive) -> None:
        """Queue an archive (sealed when published, off the response path); returns at once. Dropped (and
        counted) when the buffer is full, or when no archiver public key is configured."""
        if self._seal_to is None:
            self._dropped.inc()
            log.error("payload_archive_dropped", request_id=archive.request_id, reason="no_archive_public_key",
                      detail="set PROXY_ARCHIVE_PUBLIC_KEY to the archiver's public key")
            return
        data = codec.encode(archive)
        if self.buffered_bytes + len(data) > self._limit:
            self._dropped.inc()
            log.error("payload_archive_dropped", request_id=archive.request_id, buffered_bytes=self.buffered_bytes)
            return
        self.buffered_bytes += len(data)
        self._queue.submit((archive, data))

    async def _publish(self, item: tuple[PayloadArchive, bytes]) -> bool:
        archive, data = item
        if self._seal_to is None:  # submit() queues nothing without it
            return True
        if len(data) < INLINE_SEAL_BYTES:
            message = seal_archive(archive, self._seal_to, data)
        else:  # AES-GCM and base64 over megabytes: off the event loop the API requests share
            message = await asyncio.to_thread(seal_archive, archive, self._seal_to, data)
        try:
            await self._js.publish(subjects.PAYLOAD_SUBJECT, message, timeout=10.0, stream=subjects.PAYLOAD_STREAM,
                                   headers={"Nats-Msg-Id": archive.request_id})
        except Exception as exc:  # NATS down or slow: keep the archive and retry
            log.warning("payload_publish_failed", error=type(exc).__name__, request_id=archive.request_id)
            return False
        self.buffered_bytes -= len(data)
        return True

    async def close(self, timeout: float) -> None:
        await self._queue.close(timeout)
