"""The analytics sessions' limits: the settings they open with (readonly last) and which limit an engine error names."""

from __future__ import annotations

import pytest

from services.tracer.limits import Limits, limit_hit, session_settings


def test_session_settings_apply_every_limit_before_readonly() -> None:
    settings = session_settings(Limits(max_execution_s=5, max_result_rows=7), readonly=True)
    assert list(settings)[-1] == "readonly" and settings["readonly"] == 1
    assert settings["max_execution_time"] == 5 and settings["max_result_rows"] == 7
    assert {settings[mode] for mode in ("timeout_overflow_mode", "read_overflow_mode", "result_overflow_mode")} == {
        "throw"}  # "break" would answer a silently truncated result
    assert "readonly" not in session_settings(Limits(), readonly=False)


@pytest.mark.parametrize(("code", "message", "limit"), [
    (158, "Limit for rows (controlled by 'max_rows_to_read' setting) exceeded, max rows: 1.00 billion",
     "max_rows_to_read"),
    (307, "Limit for (uncompressed) bytes to read exceeded, max bytes: 9.54 MiB", "max_bytes_to_read"),
    (159, "Timeout exceeded: elapsed 1.0 seconds, maximum: 1", "max_execution_time"),
    (160, "Estimated query execution time (31 seconds) is too long. Maximum: 30", "max_execution_time"),
    (396, "Limit for result exceeded, max rows: 100.00, current rows: 1.00 thousand", "max_result_rows"),
    (396, "Limit for result exceeded, max bytes: 1.00 KiB, current bytes: 8.00 KiB", "max_result_bytes"),
    (241, "Memory limit (for query) exceeded: would use 56.00 MiB", "max_memory_usage"),
    (201, "Quota for user 'analytics' for 1h has been exceeded", "quota"),
    (62, "Syntax error: failed at position 1", None),
    (None, "Connection refused", None),
])
def test_limit_hit_names_the_limit(code: int | None, message: str, limit: str | None) -> None:
    assert limit_hit(code, message) == limit
