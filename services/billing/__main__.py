"""Wiring for `python -m services.billing`."""

from __future__ import annotations

import asyncio
import os

from services.billing import settings as settings_module
from services.common.lifecycle import run_service
from services.common.skeleton import run_skeleton


async def main(stop: asyncio.Event) -> None:
    await run_skeleton(stop, name="billing", settings=settings_module.load(os.environ))


if __name__ == "__main__":
    run_service(main)
