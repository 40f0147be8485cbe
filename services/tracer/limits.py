"""Pure limits of the analytics sessions: the ClickHouse settings a read-only session opens with, and which limit an
engine error says was hit (for a 4xx naming it). No I/O.

Who runs where (store.py): the ingest session and thread hold inserts, migrations, the redelivery lookup
(`existing_ids`, part of an insert) and the rollup reconciler (it writes: a rebuild's DELETE + INSERT … SELECT must
not interleave with an insert of the same minute, so it is serialised with them). Everything asked by someone else —
`POST /v1/sql`, and the trace, logs and usage lookups over NATS — runs on read-only analytics sessions with these
limits, on their own bounded pools of threads: nothing they do can hold or change the ingest session.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

# Engine error codes of a limit, by the setting that controls it when the message does not name one.
LIMIT_CODES: dict[int, str] = {
    159: "max_execution_time",  # TIMEOUT_EXCEEDED
    160: "max_execution_time",  # TOO_SLOW: the engine estimates it would run past the limit
    158: "max_rows_to_read",  # TOO_MANY_ROWS
    307: "max_bytes_to_read",  # TOO_MANY_BYTES
    396: "max_result_rows",  # TOO_MANY_ROWS_OR_BYTES (result)
    241: "max_memory_usage",  # MEMORY_LIMIT_EXCEEDED
    201: "quota",  # QUOTA_EXCEEDED (a server user's quota)
}
CANCELLED_CODE = 394  # QUERY_WAS_CANCELLED
_CONTROLLED_BY = re.compile(r"controlled by '([a-z_]+)' setting")


class Limits(msgspec.Struct, frozen=True):
    """What one analytics query may use (each 0 = no limit, as ClickHouse reads it)."""

    max_execution_s: float = 30.0
    max_rows_to_read: int = 1_000_000_000
    max_bytes_to_read: int = 20 * 1024**3
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 * 1024**2
    max_memory_bytes: int = 2 * 1024**3


def session_settings(limits: Limits, *, readonly: bool) -> dict[str, Any]:
    """Settings an analytics session opens with, in the order they must be applied: every limit first, then
    `readonly = 1` (after it the session can change no setting, its own limits included)."""
    settings: dict[str, Any] = {
        "max_execution_time": limits.max_execution_s,
        "timeout_overflow_mode": "throw",
        "max_rows_to_read": limits.max_rows_to_read,
        "max_bytes_to_read": limits.max_bytes_to_read,
        "read_overflow_mode": "throw",
        "max_result_rows": limits.max_result_rows,
        "max_result_bytes": limits.max_result_bytes,
        "result_overflow_mode": "throw",
        "max_memory_usage": limits.max_memory_bytes,
    }
    if readonly:
        settings["readonly"] = 1
    return settings


def limit_hit(code: int | None, message: str) -> str | None:
    """The limit an engine error reports (the setting's name, or "quota"), or None when it is not a limit."""
    if code not in LIMIT_CODES:
        return None
    named = _CONTROLLED_BY.search(message)
    if named:
        return named.group(1)
    if code == 396 and "max bytes" in message.lower():
        return "max_result_bytes"
    return LIMIT_CODES[code]
