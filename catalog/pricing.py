"""Exact cost of a request from its usage and the route's posted prices (Decimal, no floats)."""

from __future__ import annotations

from decimal import Decimal

from catalog.schema import Route

_MILLION = Decimal(1_000_000)


def cost_usd(route: Route, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             reasoning_tokens: int = 0) -> Decimal:
    """USD cost of one call. Cached prompt tokens and reasoning tokens use their own price when posted.

    `cached_tokens` is part of `prompt_tokens`, and `reasoning_tokens` part of `completion_tokens`,
    as in OpenAI's usage object.
    """
    cached = min(cached_tokens, prompt_tokens) if route.cached_input_per_m is not None else 0
    reasoning = min(reasoning_tokens, completion_tokens) if route.reasoning_per_m is not None else 0
    total = (prompt_tokens - cached) * route.input_per_m + (completion_tokens - reasoning) * route.output_per_m
    if cached:
        total += cached * route.cached_input_per_m  # type: ignore[operator]
    if reasoning:
        total += reasoning * route.reasoning_per_m  # type: ignore[operator]
    return total / _MILLION
