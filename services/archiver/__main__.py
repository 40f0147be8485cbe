"""Wiring for `python -m services.archiver`: settings, object store, NATS, consume and serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from proto import subjects
from services.archiver import settings as settings_module
from services.archiver.links import derive_link_keys
from services.archiver.service import Archiver, make_app
from services.archiver.store import open_store
from services.common import bus
from services.common.health import serve
from services.common.lifecycle import load_settings, run_service
from services.common.logs import configure_logging, get_logger
from services.common.usage import parse_args

ABOUT = ("Routeur's payload archiver: consumes request/response bodies from JetStream, stores them encrypted "
         "(per-object data keys wrapped by ROUTEUR_MASTER_KEY) in a file or S3 object store, serves signed "
         "links to them and deletes them after the retention period.")


async def main(stop: asyncio.Event, settings: settings_module.Settings) -> None:
    keys = settings_module.require_master_keys(settings)
    seal_keys = settings_module.require_seal_keys(settings)
    configure_logging("archiver", settings.base.log_level)
    log = get_logger()
    if settings.master_key_placeholder:
        log.warning("archiver_master_key_placeholder", detail="ROUTEUR_MASTER_KEY is the published deploy/k8s "
                    "placeholder: payloads are readable by anyone; set k1:$(openssl rand -base64 32)")
    if settings.seal_key_placeholder:
        log.warning("archiver_seal_key_placeholder", detail="ARCHIVER_SEAL_KEY is the published deploy/k8s "
                    "placeholder: anyone can open the sealed archives on the bus; make a pair with "
                    "python -m services.archiver.sealkey")
    log.info("archiver_seal_public_key", public_key=seal_keys.active.public.text())  # the proxies' value
    async with AsyncExitStack() as stack:
        store = open_store(settings.object_store_url, access_key=settings.s3_access_key.reveal(),
                           secret_key=settings.s3_secret_key.reveal(), endpoint_url=settings.s3_endpoint_url,
                           region=settings.s3_region)
        await store.ensure_bucket()
        nc = await bus.connect(settings.base.nats_url, name="archiver")
        stack.push_async_callback(nc.drain)  # after archiver.stop: flushes the last acks
        js = nc.jetstream()
        await bus.ensure_streams(js, (subjects.PAYLOAD_STREAM,), replicas=settings.stream_replicas)
        archiver = Archiver(nc=nc, js=js, store=store, keys=keys,
                            link_keys=derive_link_keys(keys, settings.link_key.reveal()), seal_keys=seal_keys,
                            url_ttl_s=settings.url_ttl_s, retention_days=settings.retention_days,
                            sweep_interval_s=settings.sweep_interval_s, batch=settings.batch)
        await archiver.start()
        stack.push_async_callback(archiver.stop)  # writes and acks the batch in hand
        runner = await serve(make_app(archiver, store, nc), host=settings.base.host, port=settings.base.port)
        stack.push_async_callback(runner.cleanup)
        log.info("archiver_started", port=settings.base.port, store=repr(store), active_kid=keys.active.kid,
                 kids=len(keys.keys), seal_kid=seal_keys.active.kid, seal_kids=len(seal_keys.keys),
                 retention_days=settings.retention_days,
                 link_key="separate" if settings.link_key else "derived")
        await stop.wait()
        log.info("archiver_stopping")
    log.info("archiver_stopped", archived=archiver.archived)


def entry() -> None:
    parse_args(sys.argv[1:], service="archiver", about=ABOUT, variables=settings_module.VARIABLES)
    settings = load_settings(settings_module.load)
    run_service(lambda stop: main(stop, settings))


if __name__ == "__main__":
    entry()
