"""The emulator's admin API under /_emulator: fault plans per model and the log of requests received."""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.emulator import openai_format as oa
from services.emulator.edge import STATE
from services.emulator.faults import decode_plan

_ENCODER = msgspec.json.Encoder()


async def put_fault(request: web.Request) -> web.Response:
    try:
        plan = decode_plan(await request.read())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return web.json_response(oa.error_body(f"Invalid fault plan: {exc}"), status=400)
    model = request.match_info["model"]
    request.app[STATE].faults.set(model, plan)
    return web.Response(body=_ENCODER.encode({"model": model, "plan": plan}), content_type="application/json")


async def get_faults(request: web.Request) -> web.Response:
    return web.Response(body=_ENCODER.encode(request.app[STATE].faults.snapshot()), content_type="application/json")


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.Response(status=204)


async def get_requests(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit")
    limit: int | None = None
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = -1
        if limit < 0:
            return web.json_response(
                oa.error_body(f"limit must be a non-negative integer, got {raw_limit!r}"), status=400
            )
    entries = request.app[STATE].requests.last(limit)
    return web.Response(body=_ENCODER.encode({"requests": entries}), content_type="application/json")


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].requests.clear()
    return web.Response(status=204)


def register(app: web.Application) -> None:
    """Add the /_emulator admin routes to an emulator app (before it starts)."""
    app.router.add_get("/_emulator/faults", get_faults)
    app.router.add_put("/_emulator/faults/{model:.+}", put_fault)
    app.router.add_delete("/_emulator/faults", clear_faults)
    app.router.add_get("/_emulator/requests", get_requests)
    app.router.add_delete("/_emulator/requests", clear_requests)
