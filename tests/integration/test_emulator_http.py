"""The emulator over real HTTP on loopback, driven by the official openai SDK and checked against the spec."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from tests.openapi import validate

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe a harbor."}]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture
async def client(emulator: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{emulator}/v1", api_key="sk-test", max_retries=0) as sdk:
        yield sdk


async def put_fault(http: aiohttp.ClientSession, emulator: str, model: str, plan: dict[str, Any]) -> None:
    async with http.put(f"{emulator}/_emulator/faults/{model}", json=plan) as response:
        assert response.status == 200, await response.text()


async def recorded(http: aiohttp.ClientSession, emulator: str, limit: int = 1000) -> list[dict[str, Any]]:
    async with http.get(f"{emulator}/_emulator/requests", params={"limit": str(limit)}) as response:
        assert response.status == 200
        return (await response.json())["requests"]


async def test_non_streaming_completion(client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession) -> None:
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    completion = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_") and raw.headers["openai-processing-ms"].isdigit()
    assert completion.object == "chat.completion" and completion.model == MODEL
    assert completion.id.startswith("chatcmpl-") and completion.system_fingerprint
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant" and choice.message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    prompt_details, completion_details = (
        completion.usage.prompt_tokens_details,
        completion.usage.completion_tokens_details,
    )
    assert prompt_details is not None and prompt_details.cached_tokens == 0
    assert completion_details is not None and completion_details.reasoning_tokens == 0
    async with http.post(
        f"{emulator}/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES},
        headers={"Authorization": "Bearer k"},
    ) as response:
        assert response.headers["Content-Type"].startswith("application/json")
        body = await response.json()
    validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == choice.message.content


async def test_streaming_matches_non_streaming(client: AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert content == plain.choices[0].message.content
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


async def test_raw_sse_framing_conforms_to_the_spec(emulator: str, http: aiohttp.ClientSession) -> None:
    request = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(
        f"{emulator}/v1/chat/completions", json=request, headers={"Authorization": "Bearer k"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        raw = (await response.read()).decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")[:-1]
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}


async def test_tool_call_round_trip(client: AsyncOpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] == "celsius"

    stream = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True)
    streamed_args = []
    async for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert delta_call.function is not None
            if delta_call.id:
                assert delta_call.id == call.id and delta_call.function.name == "get_weather"
            streamed_args.append(delta_call.function.arguments or "")
    assert "".join(streamed_args) == call.function.arguments

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})},
    ]
    second = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


async def test_fault_503_fails_once_then_succeeds(
    client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession
) -> None:
    await put_fault(http, emulator, MODEL, {"status": 503, "fail_times": 1})
    with pytest.raises(openai.InternalServerError, match="overloaded") as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    validate("ErrorResponse", caught.value.response.json())
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.choices[0].message.content


async def test_sdk_retries_through_a_transient_fault(emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, "*", {"status": 429, "fail_times": 1, "retry_after": 0})
    async with AsyncOpenAI(base_url=f"{emulator}/v1", api_key="sk-test", max_retries=2) as sdk:
        completion = await sdk.chat.completions.create(model="any-model-id", messages=MESSAGES)
    assert completion.model == "any-model-id"
    assert len(await recorded(http, emulator)) == 2


async def test_rate_limit_error_shape_and_retry_after(
    client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession
) -> None:
    await put_fault(http, emulator, MODEL, {"status": 429, "retry_after": 7})
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "7"
    assert (caught.value.code, caught.value.type) == ("rate_limit_exceeded", "requests")
    async with http.delete(f"{emulator}/_emulator/faults") as response:
        assert response.status == 204
    assert (await client.chat.completions.create(model=MODEL, messages=MESSAGES)).choices


async def test_drop_after_chunks_breaks_the_stream(
    client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession
) -> None:
    await put_fault(http, emulator, MODEL, {"drop_after_chunks": 2})
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 2


async def test_drop_without_stream_closes_before_any_response(
    client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession
) -> None:
    await put_fault(http, emulator, MODEL, {"drop_after_chunks": 0})
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)


async def test_hang_times_out_the_client(emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, MODEL, {"hang": True})
    async with AsyncOpenAI(base_url=f"{emulator}/v1", api_key="k", max_retries=0, timeout=0.3) as sdk:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert time.monotonic() - started < 2


async def test_latency_faults_delay_the_answer(client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession) -> None:
    await put_fault(http, emulator, MODEL, {"latency_ms": 100, "ttft_ms": 100, "chunk_interval_ms": 10})
    started = time.monotonic()
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert time.monotonic() - started >= 0.2 + 0.01 * (len(chunks) - 1)


async def test_recorded_requests_show_what_was_sent(
    client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession
) -> None:
    await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=5, extra_headers={"X-Trace": "t-1"}, user="alice"
    )
    await client.models.list()
    entries = await recorded(http, emulator, limit=2)
    chat, models = entries
    assert (chat["method"], chat["path"], models["path"]) == ("POST", "/v1/chat/completions", "/v1/models")
    assert chat["body"] == {"model": MODEL, "messages": MESSAGES, "max_tokens": 5, "user": "alice"}
    assert chat["headers"]["x-trace"] == "t-1" and "authorization" not in chat["headers"]
    assert chat["key_sha256"] == hashlib.sha256(b"sk-test").hexdigest()[:16]
    assert chat["seq"] < models["seq"]
    assert len(await recorded(http, emulator, limit=1)) == 1
    async with http.delete(f"{emulator}/_emulator/requests") as response:
        assert response.status == 204
    assert await recorded(http, emulator) == []


async def test_missing_key_is_a_401_openai_error(emulator: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{emulator}/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES}) as response:
        assert response.status == 401
        body = await response.json()
    validate("ErrorResponse", body)
    assert body["error"]["type"] == "invalid_request_error"
    async with http.get(f"{emulator}/v1/models", headers={"Authorization": "Basic abc"}) as response:
        assert response.status == 401


async def test_invalid_requests_are_400s(client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.BadRequestError, match="empty array") as caught:
        await client.chat.completions.create(model=MODEL, messages=[])
    assert caught.value.code == "empty_array" and caught.value.param == "messages"
    async with http.post(
        f"{emulator}/v1/chat/completions", data=b"{not json", headers={"Authorization": "Bearer k"}
    ) as response:
        assert response.status == 400
        validate("ErrorResponse", await response.json())
    async with http.get(f"{emulator}/v1/nope", headers={"Authorization": "Bearer k"}) as response:
        assert response.status == 404
        assert (await response.json())["error"]["message"] == "Invalid URL (GET /v1/nope)"


async def test_models_and_embeddings(client: AsyncOpenAI, emulator: str, http: aiohttp.ClientSession) -> None:
    models = [model.id async for model in client.models.list()]
    assert MODEL in models and "text-embedding-3-small" in models
    assert (await client.models.retrieve("some-org/custom-model")).id == "some-org/custom-model"
    async with http.get(f"{emulator}/v1/models", headers={"Authorization": "Bearer k"}) as response:
        validate("ListModelsResponse", await response.json())

    default = await client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"], dimensions=32)
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=["hello", "world"], dimensions=32, encoding_format="float"
    )
    assert len(default.data) == 2 and len(default.data[0].embedding) == 32
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.usage.prompt_tokens == 4  # two inputs of five characters
    async with http.post(
        f"{emulator}/v1/embeddings",
        json={"model": "text-embedding-3-large", "input": "hi"},
        headers={"Authorization": "Bearer k"},
    ) as response:
        body = await response.json()
    validate("CreateEmbeddingResponse", body)
    assert len(body["data"][0]["embedding"]) == 3072


async def test_health_probes(emulator: str, http: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz"):
        async with http.get(f"{emulator}{path}") as response:
            assert response.status == 200


CHAT = {"model": MODEL, "messages": MESSAGES}
AZURE_CHAT = "/openai/deployments/gpt-4o/chat/completions"


@pytest.mark.parametrize("headers", [{"api-key": "k"}, {"Authorization": "k"}, {"Authorization": "Basic k"}])
async def test_openai_paths_take_only_a_bearer_key(
    emulator: str, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """OpenAI documents `Authorization: Bearer` as the only way to pass the key; Azure's `api-key` is refused."""
    async with http.post(f"{emulator}/v1/chat/completions", json=CHAT, headers=headers) as response:
        assert response.status == 401
        body = await response.json()
    validate("ErrorResponse", body)
    assert "Authorization: Bearer" in body["error"]["message"]


async def test_azure_paths_take_only_the_api_key_header(emulator: str, http: aiohttp.ClientSession) -> None:
    """Azure answers a missing key and a Bearer that is no Entra ID token each with its own 401 shape."""
    url = f"{emulator}{AZURE_CHAT}?api-version=2024-10-21"
    async with http.post(url, json=CHAT) as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "401"
    async with http.post(url, json=CHAT, headers={"Authorization": "Bearer k"}) as response:
        assert response.status == 401
        assert (await response.json())["statusCode"] == 401
    async with http.post(url, json={"messages": MESSAGES}, headers={"api-key": "k"}) as response:
        assert response.status == 200, "the deployment names the model; Azure does not require it in the body"
        validate("CreateChatCompletionResponse", await response.json())
    async with http.post(f"{emulator}{AZURE_CHAT}", json=CHAT, headers={"api-key": "k"}) as response:
        assert response.status == 404
        assert await response.json() == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({**CHAT, "temperature": 3}, "temperature", "decimal_above_max_value"),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0]", None),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages[0]", None),
        ({**CHAT, "n": "2"}, "n", "invalid_type"),
        ({**CHAT, "reasoning_effort": "extreme"}, "reasoning_effort", "invalid_value"),
        ({**CHAT, "tools": [{"type": "function"}]}, "tools[0]", None),
        ({**CHAT, "max_tokenz": 5}, None, None),
    ],
)
async def test_chat_bodies_the_spec_refuses_are_openai_400s(
    emulator: str, http: aiohttp.ClientSession, body: dict[str, Any], param: str | None, code: str | None
) -> None:
    async with http.post(f"{emulator}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}) as r:
        assert r.status == 400
        error = await r.json()
    validate("ErrorResponse", error)
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "invalid_request_error"
    if param is None:
        assert error["error"]["message"] == "Unrecognized request argument supplied: max_tokenz"
    else:
        assert (error["error"]["param"] or "").startswith(param)
    if code is not None:
        assert error["error"]["code"] == code


async def test_embedding_bodies_the_spec_refuses_are_openai_400s(emulator: str, http: aiohttp.ClientSession) -> None:
    body = {"model": "text-embedding-3-small", "input": "hi", "user": 7}
    async with http.post(f"{emulator}/v1/embeddings", json=body, headers={"Authorization": "Bearer k"}) as r:
        assert r.status == 400
        error = await r.json()
    assert error["error"]["param"] == "user" and error["error"]["code"] == "invalid_type"
    body = {"model": "text-embedding-3-small", "input": "hi", "extra": True}
    async with http.post(f"{emulator}/v1/embeddings", json=body, headers={"Authorization": "Bearer k"}) as r:
        assert r.status == 400
