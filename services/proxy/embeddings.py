"""POST /v1/embeddings: OpenAI-compatible providers pass through; Gemini is translated; traced and billed."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import web

from catalog import pricing
from catalog.schema import Model, Route
from proto import codec
from proto.trace import TraceEvent
from services.proxy import openai_wire as wire
from services.proxy.adapters import gemini
from services.proxy.call import Call
from services.proxy.chat import exchange, inline
from services.proxy.dialects import UpstreamCall, dialect_for
from services.proxy.endpoint import Endpoint
from services.proxy.errors import InvalidRequest
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

ENDPOINT = "/v1/embeddings"
MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
_decoder = msgspec.json.Decoder()


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode and validate an embeddings request; raises InvalidRequest naming the field."""
    body = wire.decode_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    if not _valid_input(body.get("input")):
        raise InvalidRequest("'input' must be a non-empty string, or a non-empty array of non-empty strings, of "
                             f"token ids or of token-id arrays (at most {MAX_INPUTS} items)", param="input")
    for name in body:
        if name not in _FIELDS:  # OpenAI's CreateEmbeddingRequest is a closed object
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    if "encoding_format" in body and body["encoding_format"] not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    if "dimensions" in body and (not isinstance(body["dimensions"], int) or isinstance(body["dimensions"], bool)
                                 or body["dimensions"] < 1):
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    if "user" in body and not isinstance(body["user"], str):
        raise InvalidRequest("'user' must be a string", param="user")
    return body


_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
"""Every field of OpenAI's CreateEmbeddingRequest (none nullable)."""


def _valid_input(value: object) -> bool:
    """OpenAI's four input shapes: a string, strings, token ids, arrays of token ids; nothing empty, no mixing."""
    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not 0 < len(value) <= MAX_INPUTS:
        return False
    if all(isinstance(item, str) for item in value):
        return all(value)
    if all(isinstance(item, list) for item in value):
        return all(item and _tokens(item) for item in value)
    return _tokens(value)


def _tokens(values: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**31 for t in values)


def reservation(body: dict[str, Any], raw_size: int, model: Model, route: Route) -> tuple[Decimal, int]:
    """Worst case of an embeddings call: input ≈ body size / 4 tokens, no output."""
    tokens = math.ceil(raw_size / 4)
    return pricing.cost_usd(route, prompt_tokens=tokens, completion_tokens=0), tokens


def _outbound(target: Target, body: dict[str, Any], route: Route) -> UpstreamCall:
    if target.format == "openai":
        return UpstreamCall(f"{target.base_url}/embeddings",
                            {"Authorization": f"Bearer {target.api_key.reveal()}", "Content-Type": "application/json"},
                            codec.encode({**body, "model": route.upstream_model}))
    if target.format == "gemini":
        try:
            path, translated = gemini.embeddings_to_upstream(body, route.upstream_model)
        except gemini.UnsupportedParameter as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="unsupported_parameter") from None
        return UpstreamCall(f"{target.base_url}/{path}",
                            {"x-goog-api-key": target.api_key.reveal(), "Content-Type": "application/json"},
                            codec.encode(translated))
    raise InvalidRequest(f"embeddings are not available through provider {route.provider!r}", param="model",
                         code="model_not_supported")


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool) -> tuple[web.Response, TraceEvent]:
    """One upstream embeddings call; the answer in OpenAI's CreateEmbeddingResponse shape."""
    route, model = call.route, call.model
    assert route is not None and model is not None
    status, raw = await exchange(call, upstream, _outbound(target, body, route), dialect_for(target))
    estimated = False
    if target.format == "gemini":
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        translated, estimated = gemini.embeddings_from_upstream(
            _decoder.decode(raw), model=model.id, inputs=inputs, encoding_format=body.get("encoding_format", "float"))
        raw = codec.encode(translated)
    call.answered(status, wire.response_usage(raw), estimated=estimated)
    trace = call.trace()
    if inline_trace:
        raw = inline(raw, trace)
    return web.Response(status=status, body=raw, content_type="application/json",
                        headers={"x-request-id": call.request_id, **call.response_headers}), trace


EMBEDDINGS = Endpoint(path=ENDPOINT, kind="embedding", parse=parse_body, reserve=reservation, run=run)
