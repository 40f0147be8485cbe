"""Process lifecycle: uvloop when present, a stop event set on SIGTERM/SIGINT, clean exit codes."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from services.common.settings import SettingsError


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until it returns; `stop` is set on SIGTERM or SIGINT. Settings errors exit 2."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional (not on every platform)
        pass

    async def _runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(_runner())
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
