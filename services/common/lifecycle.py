"""Process lifecycle: uvloop when present, a stop event set on SIGTERM/SIGINT, clean exit codes.
(The supervisor of services that run several worker processes on one port is in `services.common.workers`.)"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import NoReturn, TypeVar

from services.common.settings import SettingsError

T = TypeVar("T")
CONFIG_EXIT = 2  # a settings error: restarting with the same environment cannot help


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until it returns; `stop` is set on SIGTERM or SIGINT. Settings errors exit 2.

    ROUTEUR_NICE (0–19) lowers the process's CPU priority first: on one machine the launcher gives it to the
    batch consumers (tracer, archiver), so their bursts wait for the proxy rather than the other way round."""
    nice = os.environ.get("ROUTEUR_NICE", "").strip()
    if nice:
        if not nice.isdigit() or int(nice) > 19:
            exit_on_settings_error(SettingsError(f"ROUTEUR_NICE must be an integer 0–19, got {nice!r}"))
        os.nice(int(nice))
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
        exit_on_settings_error(exc)


def exit_on_settings_error(exc: SettingsError) -> NoReturn:
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(CONFIG_EXIT)


def load_settings(load: Callable[[Mapping[str, str]], T], *, check: Callable[[T], None] | None = None) -> T:
    """`load(os.environ)` then `check(settings)` (start-time rules, e.g. the admin token's strength), exiting 2
    with the message on a settings error (as `run_service` does)."""
    try:
        settings = load(os.environ)
        if check is not None:
            check(settings)
        return settings
    except SettingsError as exc:
        exit_on_settings_error(exc)


def whole_line_stderr() -> None:
    """Make each log line (up to 8 KiB) one write(2). Under PYTHONUNBUFFERED, print() writes a line and its
    newline in two syscalls, so processes sharing one log file or pipe (workers) could interleave half lines."""
    if isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr.reconfigure(write_through=False, line_buffering=False)  # print(..., flush=True) flushes
