"""NATS connection and JetStream stream set-up shared by every service."""

from __future__ import annotations

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from proto.subjects import STREAMS, StreamSpec
from services.common.logs import get_logger

log = get_logger()


async def connect(url: str, *, name: str) -> Client:
    """Connect with endless reconnects, so a NATS restart is ridden out rather than fatal."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", error=type(exc).__name__, detail=str(exc)[:200])

    async def on_disconnect() -> None:
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        log.info("nats_reconnected")

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


def _config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
    )


async def ensure_streams(js: JetStreamContext, names: tuple[str, ...] | None = None, *, replicas: int = 1) -> None:
    """Create (or update to the current spec) the named streams; all of them when `names` is None.
    `replicas` > 1 needs a NATS cluster of at least that many servers (3 in the prod overlay)."""
    for spec in STREAMS:
        if names is not None and spec.name not in names:
            continue
        config = _config(spec, replicas)
        try:
            await js.add_stream(config)
        except BadRequestError:
            try:
                await js.update_stream(config)
            except BadRequestError as exc:  # e.g. a retention change, which NATS refuses on a live stream
                log.warning("stream_update_refused", stream=spec.name, detail=str(exc)[:200])
