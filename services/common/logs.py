"""One structlog setup for every service: JSON lines, ISO UTC timestamps, request_id from contextvars."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def configure_logging(service: str, level: str = "INFO") -> None:
    """Configure structlog to write one JSON object per line to stderr, tagged with the service name."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger() -> structlog.typing.FilteringBoundLogger:
    """The process logger; bind per-request fields with structlog.contextvars."""
    return structlog.get_logger()


class ProtocolLog(logging.Logger):
    """aiohttp's server logger: one JSON line naming the error class of a request aiohttp refused before any
    route (CR/LF or NUL in a header, a bad request line, an oversized header). aiohttp's own message quotes
    the offending header or request line, which may hold an API key, the admin token or a prompt, so it is
    never logged. `services.common.health.serve` installs it for every service."""

    def __init__(self, name: str = "routeur.http") -> None:
        super().__init__(name, logging.WARNING)

    def handle(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        get_logger().warning("http_protocol_error", error=type(error).__name__ if error else record.levelname,
                             status=getattr(error, "code", None))
