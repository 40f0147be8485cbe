"""The provider emulator's app: one state, each wire format's routes, the admin API and health probes."""

from __future__ import annotations

from aiohttp import web

from services.common.health import add_health_routes
from services.emulator import (
    admin_routes,
    anthropic_routes,
    bedrock_invoke,
    bedrock_routes,
    gemini_routes,
    openai_routes,
)
from services.emulator.edge import STATE, EmulatorState
from services.emulator.settings import Settings

CLIENT_MAX_SIZE = 64 * 1024 * 1024


def make_app(settings: Settings) -> web.Application:
    """The emulator app: OpenAI, Anthropic, Gemini and Bedrock routes, /_emulator admin routes, health probes."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    state = EmulatorState(settings)
    app[STATE] = state

    async def on_shutdown(_: web.Application) -> None:
        state.stopping.set()

    async def ready() -> dict[str, object]:
        return {"ready": True}

    app.on_shutdown.append(on_shutdown)
    openai_routes.register(app)
    admin_routes.register(app)
    anthropic_routes.register(app)
    gemini_routes.register(app)
    bedrock_routes.register(app)
    bedrock_invoke.register(app)
    add_health_routes(app, ready)
    return app
