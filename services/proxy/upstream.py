"""The one keep-alive HTTP session every upstream call goes through."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.proxy.dialects import UpstreamCall


class Upstream:
    """Calls providers over one shared keep-alive session."""

    def __init__(self, session: aiohttp.ClientSession, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                              sock_read=read_timeout_s)

    def post(self, call: UpstreamCall) -> Any:
        return self._session.post(call.url, data=call.body, headers=call.headers, timeout=self._timeout)


def client_session() -> aiohttp.ClientSession:
    """One keep-alive session for every upstream host."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True)
