"""Wiring only: `python -m services.emulator` loads settings, serves the emulator and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
from contextlib import AsyncExitStack

from services.common.health import serve
from services.common.lifecycle import run_service
from services.common.logs import configure_logging, get_logger
from services.emulator.service import make_app
from services.emulator.settings import load


async def main(stop: asyncio.Event) -> None:
    settings = load(os.environ)
    configure_logging("emulator", settings.log_level)
    log = get_logger()
    async with AsyncExitStack() as stack:
        runner = await serve(make_app(settings), host=settings.host, port=settings.port)
        stack.push_async_callback(runner.cleanup)
        port = runner.addresses[0][1] if runner.addresses else settings.port
        log.info("emulator_listening", host=settings.host, port=port, url=f"http://{settings.host}:{port}/v1")
        if settings.port == 0:
            print(f"EMULATOR_PORT={port}", flush=True)
        await stop.wait()
        log.info("emulator_stopping")


if __name__ == "__main__":
    run_service(main)
