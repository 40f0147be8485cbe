"""Wiring for `python -m services.router`."""

from __future__ import annotations

import asyncio
import os

from services.common.lifecycle import run_service
from services.common.skeleton import run_skeleton
from services.router import settings as settings_module


async def main(stop: asyncio.Event) -> None:
    await run_skeleton(stop, name="router", settings=settings_module.load(os.environ))


if __name__ == "__main__":
    run_service(main)
