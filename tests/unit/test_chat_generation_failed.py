"""A generation the provider itself flags as failed (Gemini's MALFORMED_FUNCTION_CALL and kin, Bedrock's
malformed_* stop reasons) is one 502 `upstream_generation_failed` naming the provider's reason, whether the
answer was streamed or not; a stand-in provider on loopback (aiohttp's TestServer) sends the failed answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from catalog import loader
from services.common.settings import Secret
from services.proxy import chat
from services.proxy.adapters import bedrock, gemini
from services.proxy.adapters.errors import StreamBroken
from services.proxy.auth import Principal
from services.proxy.call import Call
from services.proxy.errors import UpstreamUnavailable
from services.proxy.providers import Target
from services.proxy.upstream import Upstream
from services.router.policy import Candidate, Decision

CATALOG = loader.load()
CODE = "upstream_generation_failed"
GEMINI_FAILED = {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "MALFORMED_FUNCTION_CALL",
                                 "index": 0}],
                 "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "responseId": "r1"}
BEDROCK_FAILED = {"output": {"message": {"role": "assistant", "content": [{"text": "{\"broken"}]}},
                  "stopReason": "malformed_tool_use", "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3},
                  "metrics": {"latencyMs": 1}}


def routed_call(provider: str) -> Call:
    model, route = next((model, route) for model in CATALOG.models for route in model.routes
                        if route.provider == provider and model.kind == "chat")
    call = Call(request_id="r1", principal=Principal(organization_id="org", api_key_id="key"),
                started=time.perf_counter(), started_ms=0, endpoint="/v1/chat/completions")
    call.parsed({"model": model.id}, 100)
    candidate = Candidate(model, route)
    call.routed(Decision(requested_model=model.id, route_reason="default", model=model, first_choice=candidate,
                         candidates=(candidate,)))
    call.trying(candidate)
    return call


@pytest.fixture
async def provider() -> AsyncIterator[tuple[TestServer, list[dict[str, Any]]]]:
    """A provider on loopback answering each POST with the next body of the list the test fills."""
    answers: list[dict[str, Any]] = []

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server, answers
    finally:
        await server.close()


@pytest.mark.parametrize(("provider_name", "answer", "reason"), [
    ("gemini", GEMINI_FAILED, "MALFORMED_FUNCTION_CALL"), ("bedrock", BEDROCK_FAILED, "malformed_tool_use"),
])
async def test_a_failed_generation_keeps_the_providers_reason_and_code(
        provider: tuple[TestServer, list[dict[str, Any]]], provider_name: str, answer: dict[str, Any],
        reason: str) -> None:
    server, answers = provider
    answers.append(answer)
    target = Target(provider_name, str(server.make_url("")).rstrip("/"), Secret("k"), provider_name, emulated=True,
                    secret_key=Secret("s"), region="us-east-1")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as session:
        upstream = Upstream(session, connect_timeout_s=5, read_timeout_s=5)
        with pytest.raises(UpstreamUnavailable) as caught:
            await chat.complete(routed_call(provider_name), upstream, target, body, inline_trace=False)
    assert (caught.value.status, caught.value.code) == (502, CODE)
    assert reason in caught.value.message


def test_the_stream_path_carries_the_same_code_and_reason() -> None:
    stream = gemini.GeminiDialect().stream(model="gemini-2.5-flash")
    with pytest.raises(StreamBroken) as from_gemini:
        stream.events(bytearray(b"data: " + msgspec.json.encode(GEMINI_FAILED) + b"\r\n\r\n"))
    translator = bedrock.StreamTranslator(model="m", include_usage=True)
    translator.feed("messageStart", {"role": "assistant"})
    with pytest.raises(StreamBroken) as from_bedrock:
        translator.feed("messageStop", {"stopReason": "malformed_tool_use"})
    for caught, reason in ((from_gemini, "MALFORMED_FUNCTION_CALL"), (from_bedrock, "malformed_tool_use")):
        error = caught.value.body["error"]
        assert (error["code"], error["type"]) == (CODE, "server_error") and reason in error["message"]
