"""Wiring only: `python -m services.emulator` loads settings, serves the emulator and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from services.common.health import serve
from services.common.lifecycle import load_settings, run_service
from services.common.logs import configure_logging, get_logger
from services.common.usage import parse_args
from services.emulator import settings as settings_module
from services.emulator.service import make_app

ABOUT = ("Routeur's provider emulator: answers in the OpenAI, Anthropic, Gemini and Bedrock wire formats "
         "(streaming too) with deterministic text and usage, with injectable latency and faults; it stands in "
         "for providers without an API key.")


async def main(stop: asyncio.Event, settings: settings_module.Settings) -> None:
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


def entry() -> None:
    parse_args(sys.argv[1:], service="emulator", about=ABOUT, variables=settings_module.VARIABLES)
    settings = load_settings(settings_module.load)
    run_service(lambda stop: main(stop, settings))


if __name__ == "__main__":
    entry()
