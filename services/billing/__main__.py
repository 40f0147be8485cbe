"""Wiring for `python -m services.billing`: settings, NATS, replay the ledger, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from proto import subjects
from services.billing import settings as settings_module
from services.billing.admin import make_app
from services.billing.ledger import Ledger
from services.billing.service import Billing
from services.billing.store import LedgerStore
from services.common import bus
from services.common.health import serve
from services.common.lifecycle import load_settings, run_service
from services.common.logs import configure_logging, get_logger
from services.common.settings import check_admin_token
from services.common.usage import parse_args

ABOUT = ("Routeur's billing: organizations, wallets, API keys and their limits, kept as an event ledger in "
         "JetStream; admits requests (or grants proxies spend leases), settles their cost, and serves the admin "
         "API under /v1/admin.")


async def main(stop: asyncio.Event, settings: settings_module.Settings) -> None:
    configure_logging("billing", settings.log_level)
    log = get_logger()
    if settings.key_secret_derived:
        log.warning("billing_key_secret_derived", detail="BILLING_KEY_SECRET is not set: API keys are hashed with "
                    "a secret derived from ROUTEUR_ADMIN_TOKEN, so rotating that token invalidates every key")
    async with AsyncExitStack() as stack:
        nc = await bus.connect(settings.nats_url, name="billing")
        stack.push_async_callback(nc.drain)
        js = nc.jetstream()
        await bus.ensure_streams(js, (subjects.LEDGER_STREAM,), replicas=settings.stream_replicas)
        ledger = Ledger(key_secret=settings.key_secret.reveal().encode(),
                        reservation_ttl_s=settings.reservation_ttl_s, settled_retention_s=settings.settled_retention_s,
                        lease_s=settings.lease_s)
        store = LedgerStore(js, ledger, publish_timeout_s=settings.publish_timeout_s, data_dir=settings.data_dir,
                            snapshot_every=settings.snapshot_every)
        await store.start()
        stack.push_async_callback(store.stop)
        billing = Billing(nc, store)
        await billing.start()
        stack.push_async_callback(billing.stop)
        runner = await serve(make_app(settings, billing, nc), host=settings.host, port=settings.port)
        stack.push_async_callback(runner.cleanup)
        log.info("billing_started", port=settings.port, ledger_seq=store.applied_seq)
        await stop.wait()
        log.info("billing_stopping")
    log.info("billing_stopped", admits=billing.admits, settles=billing.settles)


def entry() -> None:
    parse_args(sys.argv[1:], service="billing", about=ABOUT, variables=settings_module.VARIABLES)
    settings = load_settings(settings_module.load, check=lambda loaded: check_admin_token(loaded.admin_token))
    run_service(lambda stop: main(stop, settings))


if __name__ == "__main__":
    entry()
