"""Exact cost of a request from its usage and the route's posted prices (Decimal, no floats)."""

from __future__ import annotations

from decimal import Decimal

from catalog.schema import Route

_MILLION = Decimal(1_000_000)


def cost_usd(route: Route, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
             reasoning_tokens: int = 0, cache_write_tokens: int = 0, cache_write_1h_tokens: int = 0) -> Decimal:
    """USD cost of one call, each prompt bucket at its own price.

    The buckets do not overlap and are all part of `prompt_tokens`, as in OpenAI's usage object:
    `cached_tokens` are cache reads (`cached_input_per_m`), `cache_write_tokens` cache writes with the 5-minute
    TTL (`cache_write_per_m`), `cache_write_1h_tokens` writes with the 1-hour TTL (`cache_write_1h_per_m`); the
    rest is input. `reasoning_tokens` is part of `completion_tokens`. A bucket whose price the route does not
    post is priced as plain input (reasoning as output).
    """
    cached = min(cached_tokens, prompt_tokens) if route.cached_input_per_m is not None else 0
    write = min(cache_write_tokens, prompt_tokens - cached)
    write_1h = min(cache_write_1h_tokens, prompt_tokens - cached - write)
    reasoning = min(reasoning_tokens, completion_tokens) if route.reasoning_per_m is not None else 0
    total = (prompt_tokens - cached - write - write_1h) * route.input_per_m \
        + (completion_tokens - reasoning) * route.output_per_m
    if cached:
        total += cached * route.cached_input_per_m  # type: ignore[operator]
    if write:
        total += write * (route.cache_write_per_m if route.cache_write_per_m is not None else route.input_per_m)
    if write_1h:
        total += write_1h * (route.cache_write_1h_per_m if route.cache_write_1h_per_m is not None
                             else route.input_per_m)
    if reasoning:
        total += reasoning * route.reasoning_per_m  # type: ignore[operator]
    return total / _MILLION
