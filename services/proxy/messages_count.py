"""POST /v1/messages/count_tokens: the input tokens of a Messages body, counted by the route's own provider.

Anthropic routes pass the body (after DLP) to Anthropic's count_tokens endpoint; Bedrock routes call CountTokens
(botocore's bedrock-runtime model has it: `POST /model/{modelId}/count-tokens` with the InvokeModel body in
`input.invokeModel.body`), with the foundation model id, since CountTokens refuses inference-profile ids. Where the
provider cannot count (a model CountTokens does not take, a route that is not Claude's) the answer is an estimate
(≈ 4 bytes of the body a token), flagged by the `x-routeur-token-count: estimated` header. Counting is free: the
trace carries no tokens and costs 0.
"""

from __future__ import annotations

import base64
import math
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import msgspec
from aiohttp import web
from yarl import URL

from catalog.schema import Model, Route
from proto import codec
from proto.trace import TraceEvent
from services.proxy import chat, messages
from services.proxy import openai_wire as wire
from services.proxy.adapters import anthropic_inbound as inbound
from services.proxy.adapters import anthropic_native as native
from services.proxy.adapters import bedrock
from services.proxy.adapters.errors import TranslationError
from services.proxy.call import Call
from services.proxy.dialects import UpstreamCall, dialect_for
from services.proxy.endpoint import Endpoint
from services.proxy.errors import InvalidRequest, UpstreamError, UpstreamUnavailable
from services.proxy.providers import Target
from services.proxy.upstream import Upstream

ENDPOINT = "/v1/messages/count_tokens"
COUNT_HEADER = "x-routeur-token-count"
PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.")
"""Geography prefixes of Bedrock's cross-Region inference profile ids (the foundation model id follows)."""
_DECODER = msgspec.json.Decoder()


def parse(raw: bytes) -> dict[str, Any]:
    """A count_tokens body: a Messages body without `max_tokens` (checked as one)."""
    body = wire.decode_json(raw)
    try:
        inbound.check_request({"max_tokens": 1, **body} if isinstance(body, dict) else body)
    except TranslationError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None
    return body


def reserve(body: dict[str, Any], raw_size: int, model: Model, route: Route) -> tuple[Decimal, int]:
    """Counting is free: nothing to reserve."""
    return Decimal(0), 0


def foundation_model(upstream_model: str) -> str:
    """The foundation model id of a Bedrock model or inference-profile id."""
    return upstream_model.split(".", 1)[1] if upstream_model.startswith(PROFILE_PREFIXES) else upstream_model


def bedrock_count_request(target: Target, body: dict[str, Any], upstream_model: str,
                          headers: Any) -> UpstreamCall:
    """CountTokens for a Claude body: the InvokeModel body base64 in the JSON, with the `max_tokens` an InvokeModel
    body needs (one more than the thinking budget, which it must exceed) when the caller's has none."""
    thinking = body.get("thinking")
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    max_tokens = budget + 1 if isinstance(budget, int) and not isinstance(budget, bool) else 1
    invoke = native.bedrock_body({"max_tokens": max_tokens, **body}, headers)
    url = str(URL(f"{target.base_url}/model/{quote(foundation_model(upstream_model), safe='')}/count-tokens"))
    payload = codec.encode({"input": {"invokeModel": {"body": base64.b64encode(codec.encode(invoke)).decode()}}})
    signed = bedrock.sign("POST", url, {"Content-Type": "application/json"}, payload,
                          access_key=target.api_key.reveal(), secret_key=target.secret_key.reveal(),
                          region=bedrock.region_of(url) or target.region or "us-east-1",
                          session_token=target.session_token.reveal() or None)
    return UpstreamCall(url, signed, payload)


def _reply(call: Call, tokens: int, *, estimated: bool) -> tuple[web.Response, TraceEvent]:
    call.answered(200)
    headers = {"x-request-id": call.request_id, "request-id": call.request_id, **call.response_headers}
    if estimated:
        headers[COUNT_HEADER] = "estimated"
    return web.Response(status=200, body=codec.encode({"input_tokens": tokens}), content_type="application/json",
                        headers=headers), call.trace()


async def run(call: Call, upstream: Upstream, target: Target, body: dict[str, Any], request: web.Request,
              inline_trace: bool) -> tuple[web.StreamResponse, TraceEvent]:
    route = call.route
    assert route is not None
    estimate = math.ceil(len(codec.encode(body)) / 4)
    if target.format == "anthropic":
        outbound = native.anthropic_request(target, body, route.upstream_model, request.headers)
        outbound = UpstreamCall(outbound.url + "/count_tokens", outbound.headers, outbound.body)
    elif target.format == "bedrock":
        outbound = bedrock_count_request(target, body, route.upstream_model, request.headers)
    else:
        return _reply(call, estimate, estimated=True)
    try:
        _, raw = await chat.exchange(call, upstream, outbound, dialect_for(target))
    except UpstreamError as exc:
        if target.format == "bedrock" and exc.status == 400 and "counting tokens" in exc.message:
            return _reply(call, estimate, estimated=True)  # CountTokens does not take this model
        raise
    try:
        answer = _DECODER.decode(raw)
        tokens = int(answer["input_tokens"] if target.format == "anthropic" else answer["inputTokens"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        raise UpstreamUnavailable(f"the provider {route.provider!r} sent a count Routeur cannot read",
                                  code="upstream_bad_response") from None
    return _reply(call, tokens, estimated=False)


MESSAGES_COUNT = Endpoint(path=ENDPOINT, kind="chat", parse=parse, reserve=reserve, run=run,
                          render_error=messages.error_response)
