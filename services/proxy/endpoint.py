"""What a metered endpoint plugs into the pipeline: its path, its body parser, its reservation, its upstream
call and the renderers of its replies and errors (chat.CHAT, embeddings.EMBEDDINGS, messages.MESSAGES)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from catalog.schema import Model, Route
from proto.trace import TraceEvent
from services.proxy.call import Call
from services.proxy.errors import ErrorRenderer, error_response
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

Parse = Callable[[bytes], dict[str, Any]]
"""The raw body → the body the pipeline routes and sends on (InvalidRequest naming the field when it cannot)."""
Reserve = Callable[[dict[str, Any], int, Model, Route], tuple[Decimal, int]]
"""(body, body size, model, route) → the worst-case (USD, tokens) billing reserves before the call."""
Run = Callable[[Call, Upstream, Target, dict[str, Any], web.Request, bool],
               Awaitable[tuple[web.StreamResponse, TraceEvent]]]
"""(call, upstream, target, body, request, inline trace) → the caller's response and the trace: one attempt."""
Render = Callable[[web.Response, Call], web.Response]
"""A finished non-streamed reply → the reply in the endpoint's own format."""


def as_is(response: web.Response, call: Call) -> web.Response:
    return response


@dataclass(frozen=True)
class Endpoint:
    """One metered route. `kind` is the catalog model kind it serves (a model of another kind is refused)."""

    path: str
    kind: str
    parse: Parse
    reserve: Reserve
    run: Run
    render: Render = as_is
    render_error: ErrorRenderer = error_response
