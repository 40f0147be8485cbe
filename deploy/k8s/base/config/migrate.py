"""The routeur-migrate Job: every service's idempotent start-up steps, once, before or during a rollout.

JetStream streams (all of proto.subjects.STREAMS), the ClickHouse schema migrations and TTL, and the
object-store bucket. The services repeat their own steps when they start, so the Job only makes a
deploy's schema change happen once and up front; running it again changes nothing. Settings come from
the same environment variables and settings modules as the tracer and the archiver.
"""

from __future__ import annotations

import asyncio
import os

from services.archiver import settings as archiver_settings
from services.archiver.store import open_store
from services.common import bus
from services.common.logs import configure_logging, get_logger
from services.tracer import settings as tracer_settings
from services.tracer.store import TraceStore


async def main() -> None:
    tracer = tracer_settings.load(os.environ)
    archiver = archiver_settings.load(os.environ)
    configure_logging("migrate", tracer.log_level)
    log = get_logger()

    nc = await bus.connect(tracer.nats_url, name="migrate")
    try:
        await bus.ensure_streams(nc.jetstream())
    finally:
        await nc.drain()
    log.info("migrate_streams_ready")

    store = TraceStore(tracer.clickhouse_url)
    try:
        await store.open(ttl_days=tracer.ttl_days)
    finally:
        await store.close()
    log.info("migrate_clickhouse_ready")

    objects = open_store(archiver.object_store_url, access_key=archiver.s3_access_key.reveal(),
                         secret_key=archiver.s3_secret_key.reveal(), endpoint_url=archiver.s3_endpoint_url,
                         region=archiver.s3_region)
    await objects.ensure_bucket()
    log.info("migrate_bucket_ready")


if __name__ == "__main__":
    asyncio.run(main())
