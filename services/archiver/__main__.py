"""Wiring for `python -m services.archiver`: open the object store, then the shared service skeleton."""

from __future__ import annotations

import asyncio
import os

from nats.aio.client import Client

from services.archiver import settings as settings_module
from services.archiver.store import open_store
from services.common.lifecycle import run_service
from services.common.skeleton import run_skeleton


async def main(stop: asyncio.Event) -> None:
    settings = settings_module.load(os.environ)
    store = open_store(settings.object_store_url, access_key=settings.s3_access_key.reveal(),
                       secret_key=settings.s3_secret_key.reveal(), endpoint_url=settings.s3_endpoint_url,
                       region=settings.s3_region)

    async def setup(_: Client) -> None:
        await store.ensure_bucket()

    async def check() -> dict[str, object]:
        return {"object_store": await store.ping()}

    await run_skeleton(stop, name="archiver", settings=settings.base, extra_check=check, setup=setup)


if __name__ == "__main__":
    run_service(main)
